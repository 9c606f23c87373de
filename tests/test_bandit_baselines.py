"""Bandit baselines (jmeta.bandits): the Gittins calibration against a hand-computed case and a float64 Python
recursion, the policies against NumPy loops that replay the rollout's keys, the bandit under vmap against a loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmeta import bandits, envs, rollout

ARMS, PULLS, TASKS = 3, 8, 4


@functools.lru_cache(maxsize=None)
def _reference_index(s: int, f: int, m: int) -> float:
  """The finite-horizon Gittins index by bisection on the retirement reward, each value by recursion, float64."""

  def q(lam: float) -> float:
    @functools.lru_cache(maxsize=None)
    def w(s, f, m):
      return 0.0 if m == 0 else max(0.0, cont(s, f, m))

    def cont(s, f, m):
      p = (1 + s) / (2 + s + f)
      return p - lam + p * w(s + 1, f, m - 1) + (1 - p) * w(s, f + 1, m - 1)

    return cont(s, f, m)

  lo, hi = 0.0, 1.0
  for _ in range(50):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if q(mid) > 0 else (lo, mid)
  return (lo + hi) / 2


@pytest.fixture(scope='module')
def table():
  return bandits.gittins_table(6, grid=501)


def test_gittins_index_by_hand(table):
  # One pull left: the index is the posterior mean (1 + s) / (2 + s + f).
  for s, f in ((0, 0), (2, 1), (0, 3), (4, 1)):
    np.testing.assert_allclose(table[1, s, f], (1 + s) / (2 + s + f), rtol=1e-6)
  # Two pulls left from the prior: for 1/3 < lam < 2/3 the player stops after a loss (1/3 < lam) and goes on after
  # a win (2/3 > lam), so Q = 1/2 - lam + 1/2 (2/3 - lam) = 5/6 - 3 lam / 2, zero at lam = 5/9.
  np.testing.assert_allclose(table[2, 0, 0], 5 / 9, rtol=1e-6)
  # More pulls left make exploring worth more: the index grows with the horizon, above the posterior mean.
  assert np.all(np.diff(table[1:, 0, 0]) > 0) and table[6, 0, 0] > 0.5


def test_gittins_table_matches_a_python_recursion(table):
  for m in range(1, 7):
    for s in range(0, 7 - m):
      for f in range(0, 7 - m - s):
        # A grid of 501 values interpolated: exact between kinks, within 1/500 at worst.
        np.testing.assert_allclose(table[m, s, f], _reference_index(s, f, m), atol=2e-3, err_msg=str((m, s, f)))
  exact = [abs(table[m, 0, 0] - _reference_index(0, 0, m)) < 1e-5 for m in range(1, 7)]
  assert sum(exact) >= 4


def _replay(policy_choice, tasks, key_per_task, steps=PULLS):
  """A NumPy loop over tasks and steps with the rollout's key schedule: step t's keys are
  `split(split(scan_key, steps)[t], 3)` for the policy and `env.step`; returns actions and rewards."""
  actions, rewards = np.zeros((len(key_per_task), steps), int), np.zeros((len(key_per_task), steps))
  step_keys = jax.jit(jax.vmap(lambda k: jax.vmap(lambda s: jax.random.split(s, 3))(
      jax.random.split(jax.random.split(k)[1], steps))))(key_per_task)   # [tasks, steps, 3, 2]
  for i in range(len(key_per_task)):
    pulls, wins = np.zeros(ARMS), np.zeros(ARMS)
    for t in range(steps):
      policy_key, env_key, _ = step_keys[i, t]
      a = policy_choice(policy_key, pulls.copy(), wins.copy())
      r = float(_bernoulli(env_key, tasks.probs[i, a]))
      pulls[a] += 1
      wins[a] += r
      actions[i, t], rewards[i, t] = a, r
  return actions, rewards


_bernoulli = jax.jit(jax.random.bernoulli)
_beta = jax.jit(jax.random.beta)


@pytest.fixture(scope='module')
def bandit_tasks():
  env = envs.bernoulli_bandit(ARMS)
  tasks = jax.vmap(env.sample_params)(jax.random.split(jax.random.PRNGKey(0), TASKS))
  return env, tasks, jax.random.split(jax.random.PRNGKey(1), TASKS)


@functools.lru_cache(maxsize=None)  # one program per policy, however often it runs
def _rollouts(env, policy, params):
  return jax.jit(jax.vmap(lambda p, k: rollout(env, policy, params, p, k, steps=PULLS,
                                               carry=bandits.initial_counts(ARMS))))


def _run(env, policy, params, tasks, keys):
  out = _rollouts(env, policy, params)(tasks, keys)
  return np.asarray(out.action), np.asarray(out.reward)


def test_thompson_sampling_replays_in_a_python_loop(bandit_tasks):
  env, tasks, keys = bandit_tasks
  actions, rewards = _run(env, bandits.thompson_policy, (), tasks, keys)
  ref_a, ref_r = _replay(lambda k, n, w: int(np.argmax(_beta(k, 1.0 + w, 1.0 + n - w))), tasks, keys)
  np.testing.assert_array_equal(actions, ref_a)
  np.testing.assert_array_equal(rewards, ref_r)   # the bandit under vmap pays what a loop over tasks pays
  again, _ = _run(env, bandits.thompson_policy, (), tasks, keys)
  np.testing.assert_array_equal(again, actions)   # deterministic given the keys


def test_ucb1_pulls_each_arm_once_then_the_largest_bound(bandit_tasks):
  env, tasks, keys = bandit_tasks
  actions, rewards = _run(env, bandits.ucb1_policy, 1.0, tasks, keys)
  assert all(sorted(row[:ARMS]) == list(range(ARMS)) for row in actions)
  for row_a, row_r in zip(actions, rewards):
    pulls, wins = np.zeros(ARMS), np.zeros(ARMS)
    for t, (a, r) in enumerate(zip(row_a, row_r)):
      if t >= ARMS:
        bound = wins / pulls + np.sqrt(2 * np.log(t) / pulls)   # Auer et al. (2002), c = 1
        assert bound[a] >= bound.max() - 1e-6
      pulls[a] += 1
      wins[a] += r


def test_gittins_and_greedy_policies_follow_their_indices(bandit_tasks, table):
  env, tasks, keys = bandit_tasks
  horizon = 6
  fn = jax.jit(jax.vmap(lambda p, k: rollout(env, bandits.gittins_policy(table), (), p, k, steps=horizon,
                                             carry=bandits.initial_counts(ARMS))))
  out = fn(tasks, keys)
  for row_a, row_r in zip(np.asarray(out.action), np.asarray(out.reward)):
    pulls, wins = np.zeros(ARMS, int), np.zeros(ARMS, int)
    for t, (a, r) in enumerate(zip(row_a, row_r)):
      index = np.array([_reference_index(wins[j], pulls[j] - wins[j], horizon - t) for j in range(ARMS)])
      assert index[a] >= index.max() - 2e-3
      pulls[a] += 1
      wins[a] += int(r)
  actions, rewards = _run(env, bandits.epsilon_greedy_policy, 0.0, tasks, keys)
  for row_a, row_r in zip(actions, rewards):
    pulls, wins = np.zeros(ARMS), np.zeros(ARMS)
    for a, r in zip(row_a, row_r):
      mean = (1 + wins) / (2 + pulls)
      assert mean[a] == mean.max()
      pulls[a] += 1
      wins[a] += r


def test_random_policy_is_uniform_and_epsilon_one_is_random():
  env = envs.bernoulli_bandit(4)
  task = env.sample_params(jax.random.PRNGKey(3))
  for policy, params in ((bandits.random_policy, ()), (bandits.epsilon_greedy_policy, 1.0)):
    out = jax.jit(lambda k: rollout(env, policy, params, task, k, steps=2000, carry=bandits.initial_counts(4)))(
        jax.random.PRNGKey(4))
    counts = np.bincount(np.asarray(out.action), minlength=4)
    assert np.all(np.abs(counts - 500) < 4 * np.sqrt(500 * 0.75))   # 4 binomial standard deviations


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match='table must be'):
    bandits.gittins_policy(np.zeros((3, 4, 4)))
  with pytest.raises(ValueError, match='integer scalar previous action'):
    bandits.thompson_policy((), bandits.initial_counts(2), jnp.zeros(1), jnp.zeros(()), 0.0, True,
                            jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match='horizon'):
    bandits.gittins_table(0)
  with pytest.raises(ValueError, match='arms'):
    bandits.initial_counts(0)
