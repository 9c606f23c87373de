"""Environments and rollouts: hand-computed steps, and the scanned rollout against a Python loop of reset and step."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmeta.envs import (BanditParams, NavigationParams, NavigationState, Trajectory, bernoulli_bandit, navigation_2d,
                        rollout)



def bandit_policy(params, carry, obs, prev_action, prev_reward, done, key):
  """Softmax over `params` plus a running count of each arm's rewards (an RL^2-shaped carry)."""
  del obs
  carry = carry + jax.nn.one_hot(prev_action, carry.shape[0]) * prev_reward
  action = jax.random.categorical(key, params + carry)
  return carry, action, (prev_action, prev_reward, done)


def navigation_policy(params, carry, obs, prev_action, prev_reward, done, key):
  """Noisy steps of `params['gain']` toward `params['target']`; counts its steps in the carry."""
  action = params['gain'] * (params['target'] - obs) + 1e-4 * jax.random.normal(key, (2,))
  return carry + 1, action, (prev_action, prev_reward, done, carry)


def python_rollout(env, policy, policy_params, env_params, key, steps, carry):
  """`rollout` as a Python loop over `env.reset` and `env.step`, with the keys its docstring names."""
  reset_key, scan_key = jax.random.split(key)
  state, obs = env.reset(reset_key, env_params)
  first = -1 if jnp.issubdtype(env.action.dtype, jnp.integer) else 0
  prev = (jnp.full(env.action.shape, first, env.action.dtype), jnp.float32(0), jnp.bool_(True))
  out = []
  for step_key in jax.random.split(scan_key, steps):
    policy_key, env_key, reset_key = jax.random.split(step_key, 3)
    carry, action, aux = policy(policy_params, carry, obs, *prev, policy_key)
    action = jnp.asarray(action, env.action.dtype)
    state, next_obs, reward, done = env.step(env_key, state, action, env_params)
    out.append(Trajectory(obs, action, jnp.float32(reward), jnp.bool_(done), aux))
    if done:
      state, next_obs = env.reset(reset_key, env_params)
    obs, prev = next_obs, (action, jnp.float32(reward), jnp.bool_(done))
  return jax.tree.map(lambda *a: jnp.stack(a), *out)


def test_bandit_rewards_are_bernoulli_of_the_pulled_arm():
  env = bernoulli_bandit(3)
  params = BanditParams(jnp.array([0.0, 1.0, 0.0]))
  state, obs = env.reset(jax.random.PRNGKey(0), params)
  for i, action in enumerate([0, 1, 2, 1]):
    _, obs, reward, done = env.step(jax.random.PRNGKey(i), state, jnp.int32(action), params)
    assert float(reward) == (action == 1) and bool(done) and obs.shape == (1,)
  # A half-probability arm pays about half the time; the task's probabilities are uniform on [0, 1].
  half = BanditParams(jnp.array([0.5, 0.5, 0.5]))
  pulls = jax.vmap(lambda k: env.step(k, state, jnp.int32(2), half)[2])(jax.random.split(jax.random.PRNGKey(1), 4000))
  assert abs(float(pulls.mean()) - 0.5) < 4 * 0.5 / np.sqrt(4000)
  probs = jax.vmap(env.sample_params)(jax.random.split(jax.random.PRNGKey(2), 2000)).probs
  assert probs.shape == (2000, 3) and 0 <= probs.min() and probs.max() <= 1 and abs(float(probs.mean()) - 0.5) < 0.02


def test_navigation_step_by_hand():
  env = navigation_2d(horizon=4)
  goal = NavigationParams(jnp.array([0.3, -0.05]))
  state, obs = env.reset(jax.random.PRNGKey(0), goal)
  np.testing.assert_array_equal(obs, [0, 0])
  state, obs, reward, done = env.step(None, state, jnp.array([0.5, -0.02]), goal)  # clipped to [0.1, -0.02]
  np.testing.assert_allclose(obs, [0.1, -0.02])
  np.testing.assert_allclose(reward, -np.hypot(0.2, 0.03), rtol=1e-6)
  assert not done and int(state.time) == 1
  # Within 0.01 of the goal in both coordinates: done before the horizon.
  _, _, reward, done = env.step(None, NavigationState(jnp.array([0.2, -0.05]), jnp.int32(1)), jnp.array([0.095, 0.0]),
                                goal)
  assert bool(done) and float(reward) == pytest.approx(-0.005, abs=1e-6)
  # Not near the goal, but at the horizon.
  _, _, _, done = env.step(None, NavigationState(jnp.zeros(2), jnp.int32(3)), jnp.zeros(2), goal)
  assert bool(done)
  goals = jax.vmap(env.sample_params)(jax.random.split(jax.random.PRNGKey(1), 1000)).goal
  assert goals.shape == (1000, 2) and -0.5 <= goals.min() and goals.max() <= 0.5


def test_navigation_rollout_equals_a_python_loop_with_resets_at_the_horizon_and_the_goal():
  env = navigation_2d(horizon=5)
  goal = NavigationParams(jnp.array([0.15, -0.1]))
  # Gain 1 reaches the goal in two steps (the first clipped), so episodes end at the goal, not the horizon; then
  # a gain that never arrives makes them end at the horizon.
  for gain, ends in ((1.0, [1, 3, 5, 7, 9, 11]), (0.1, [4, 9])):
    policy_params = {'gain': jnp.float32(gain), 'target': goal.goal}
    key = jax.random.PRNGKey(3)
    got = jax.jit(lambda p, k: rollout(env, navigation_policy, p, goal, k, 12, jnp.int32(0)))(policy_params, key)
    want = python_rollout(env, navigation_policy, policy_params, goal, key, 12, jnp.int32(0))
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)
    assert np.flatnonzero(got.done).tolist() == ends
    # Each episode starts again at the origin; the policy's carry counts steps across episodes.
    np.testing.assert_array_equal(np.asarray(got.obs)[np.array(ends[:-1]) + 1], 0)
    np.testing.assert_array_equal(got.aux[3], np.arange(12))
    # The policy sees the previous step's action, reward and done (zeros and True at the start).
    np.testing.assert_array_equal(got.aux[0][1:], got.action[:-1])
    np.testing.assert_array_equal(got.aux[1], np.concatenate([[0], got.reward[:-1]]))
    np.testing.assert_array_equal(got.aux[2], np.concatenate([[True], got.done[:-1]]))


def test_bandit_trial_vmapped_over_tasks_equals_a_loop_of_python_rollouts():
  env = bernoulli_bandit(4)
  keys = jax.random.split(jax.random.PRNGKey(4), 3)
  tasks = jax.vmap(env.sample_params)(keys)
  policy_params = jnp.array([0.0, 0.5, -0.5, 1.0])
  trial = jax.jit(jax.vmap(lambda p, k: rollout(env, bandit_policy, policy_params, p, k, 10, jnp.zeros(4))))
  got = trial(tasks, keys)
  assert got.reward.shape == (3, 10) and got.action.dtype == jnp.int32 and bool(got.done.all())
  np.testing.assert_array_equal(got.aux[0][:, 0], -1)  # no previous action at a trial's first step
  np.testing.assert_array_equal(got.aux[0][:, 1:], got.action[:, :-1])
  for i in range(3):
    task = jax.tree.map(lambda a: a[i], tasks)
    want = python_rollout(env, bandit_policy, policy_params, task, keys[i], 10, jnp.zeros(4))
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], got), want)


def test_rollout_errors():
  env = navigation_2d()
  bad = lambda p, c, o, a, r, d, k: (c, jnp.zeros(3), ())
  with pytest.raises(ValueError, match=r'the policy returned an action of shape \(3,\); the environment takes \(2,\)'):
    rollout(env, bad, None, env.sample_params(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 2)
  with pytest.raises(ValueError, match='steps must be an integer >= 1; got 0'):
    rollout(env, bad, None, None, jax.random.PRNGKey(1), 0)
  with pytest.raises(ValueError, match='arms must be an integer >= 1; got 0'):
    bernoulli_bandit(0)
  with pytest.raises(ValueError, match='max_action must be a positive finite number'):
    navigation_2d(max_action=-0.1)


def test_bad_actions_and_task_parameters_are_refused_when_traced():
  bandit, nav = bernoulli_bandit(3), navigation_2d()
  key, probs = jax.random.PRNGKey(0), BanditParams(jnp.array([0.1, 0.5, 0.9]))
  step = jax.jit(bandit.step)
  with pytest.raises(ValueError,
                     match=r'bandit task probs: expected a float array of shape \(3,\); got float32 \(4,\)'):
    step(key, (), jnp.int32(0), BanditParams(jnp.zeros(4)))
  with pytest.raises(ValueError, match=r'bandit action \(an arm index\): expected an integer array of shape \(\)'):
    step(key, (), jnp.float32(1.0), probs)
  with pytest.raises(ValueError, match='bandit action: expected an arm in 0..2; got 3'):
    bandit.step(key, (), jnp.int32(3), probs)
  # Traced, an out-of-range arm cannot be refused: it pays NaN, not the clamped arm's reward.
  assert np.isnan(step(key, (), jnp.int32(3), probs)[2]) and np.isnan(step(key, (), jnp.int32(-1), probs)[2])
  assert step(key, (), jnp.int32(2), probs)[2] in (0.0, 1.0)
  with pytest.raises(ValueError,
                     match=r'navigation task goal: expected a float array of shape \(2,\); got float32 \(3,\)'):
    jax.jit(nav.reset)(key, NavigationParams(jnp.zeros(3)))
  state, _ = nav.reset(key, NavigationParams(jnp.zeros(2)))
  with pytest.raises(ValueError, match=r'navigation action \(a velocity\): expected a float array of shape \(2,\)'):
    jax.jit(nav.step)(key, state, jnp.zeros(2, jnp.int32), NavigationParams(jnp.zeros(2)))
