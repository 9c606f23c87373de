"""MAML-RL: the DiCE surrogate against REINFORCE by hand and finite differences of exact expected returns, the
baseline and returns against NumPy, episodes against NumPy dynamics and under vmap."""

import importlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmeta.envs import NavigationParams, bernoulli_bandit, navigation_2d
from jmeta.algorithms.rl2 import trial_split
from jmeta.tasks import Task

mrl = importlib.import_module('jmeta.algorithms.maml_rl')  # the module (jmeta.algorithms.maml_rl is the function)

# A tabular MDP small enough to enumerate: 2 states, 2 actions, horizon 3, stochastic transitions.
P = np.array([[[0.8, 0.2], [0.3, 0.7]], [[0.5, 0.5], [0.1, 0.9]]])   # P[s, a, s']
R = np.array([[1.0, -0.5], [0.2, 2.0]])                                # R[s, a]
BASELINE = np.array([[0.3, -0.7], [1.1, 0.4], [-0.2, 0.9]])           # b[t, s]: any function of the history
HORIZON = 3


def trajectories():
  """Every trajectory of the tabular MDP from state 0: states, actions `[32, 3]` and its probability under the
  dynamics alone `[32]`."""
  states, actions, probs = [], [], []
  for acts in itertools.product(range(2), repeat=HORIZON):
    for nexts in itertools.product(range(2), repeat=HORIZON - 1):
      path = (0,) + nexts
      states.append(path)
      actions.append(acts)
      probs.append(np.prod([P[path[t], acts[t], path[t + 1]] for t in range(HORIZON - 1)]))
  return np.array(states), np.array(actions), np.array(probs)


STATES, ACTIONS, DYNAMICS = trajectories()
REWARDS = R[STATES, ACTIONS]                                     # [32, 3]
TO_GO = np.cumsum(REWARDS[:, ::-1], axis=1)[:, ::-1]


def log_policy(theta):
  """log pi(a_t | s_t) of every trajectory, `[32, 3]`, for a tabular softmax policy `theta [2, 2]`."""
  return jax.nn.log_softmax(theta)[STATES, ACTIONS]


@jax.jit
def exact_return(theta):
  """J(theta) = sum over trajectories of p(tau) R(tau), enumerated."""
  return jnp.sum(DYNAMICS * jnp.exp(jnp.sum(log_policy(theta), 1)) * REWARDS.sum(1))


def expected_surrogate(theta, surrogate, baseline=True):
  """sum_tau stop(p_theta(tau)) surrogate_tau(theta): the surrogate's expectation, with the sampling distribution
  held at theta (as a sample would be)."""
  logp = log_policy(theta)
  weight = jax.lax.stop_gradient(DYNAMICS * jnp.exp(jnp.sum(logp, 1)))
  adv = TO_GO - (BASELINE[np.arange(HORIZON), STATES] if baseline else 0.0)
  return jnp.sum(weight * jax.vmap(surrogate)(logp, jnp.asarray(adv)))


def naive_surrogate(logp, adv):
  """sum_t log pi_t A_t: the right gradient, the wrong Hessian (no score-function terms)."""
  return jnp.sum(logp * adv)


def fd_hessian(f, theta, eps):
  """Central differences of `f`'s Hessian, all 4 n^2 points in one vmap."""
  n = theta.size
  basis = np.eye(n) * eps
  signs = np.array([(1, 1), (1, -1), (-1, 1), (-1, -1)])
  points = np.array([[[theta.reshape(-1) + si * basis[i] + sj * basis[j] for si, sj in signs] for j in range(n)]
                     for i in range(n)])
  values = np.asarray(jax.vmap(f)(jnp.asarray(points.reshape(-1, *theta.shape)))).reshape(n, n, 4)
  return (values[..., 0] - values[..., 1] - values[..., 2] + values[..., 3]) / (4 * eps * eps)


def fd_gradient(f, theta, eps):
  n = theta.size
  points = np.concatenate([theta.reshape(-1) + eps * np.eye(n), theta.reshape(-1) - eps * np.eye(n)])
  values = np.asarray(jax.vmap(f)(jnp.asarray(points.reshape(-1, *theta.shape))))
  return (values[:n] - values[n:]) / (2 * eps)


def best_error(fd, want, steps=(1e-2, 1e-3, 1e-4)):
  """The smallest max-abs error of finite differences over several step sizes."""
  return min(np.max(np.abs(fd(eps) - want)) for eps in steps)


def test_surrogate_gradient_is_reinforce_on_a_one_step_bandit():
  with jax.enable_x64(True):
    theta = jnp.array([0.3, -1.2, 0.8])
    r = jnp.array([1.0, 0.2, -0.5])
    pi = np.asarray(jax.nn.softmax(theta))
    for b in (0.0, 0.7):  # a constant baseline changes no expectation
      one = lambda a: jax.grad(lambda t: mrl.dice_surrogate(jax.nn.log_softmax(t)[a][None], (r[a] - b)[None]))(theta)
      grads = jax.jit(jax.vmap(one))(jnp.arange(3))
      for a in range(3):  # one sample: grad log pi(a) A, with grad log softmax = e_a - pi
        np.testing.assert_allclose(grads[a], (np.eye(3)[a] - pi) * float(r[a] - b), atol=1e-12)
      expected = sum(pi[a] * np.asarray(grads[a]) for a in range(3))
      np.testing.assert_allclose(expected, pi * (np.asarray(r) - pi @ np.asarray(r)), atol=1e-12)  # by hand
    assert float(mrl.dice_surrogate(jnp.array([-0.4]), jnp.array([3.0]))) == 0.0


def test_surrogate_hessian_matches_finite_differences_of_the_exact_return():
  with jax.enable_x64(True):
    theta = jnp.array([[0.2, -0.4], [0.5, 0.1]])
    want_grad = fd_gradient(exact_return, theta, 1e-5)
    got_grad = jax.jit(jax.grad(lambda t: expected_surrogate(t, mrl.dice_surrogate)))(theta).reshape(-1)
    np.testing.assert_allclose(got_grad, want_grad, atol=1e-8)
    hessian = lambda surrogate, **kw: np.asarray(jax.jit(jax.hessian(
        lambda t: expected_surrogate(t, surrogate, **kw)))(theta)).reshape(4, 4)
    dice = hessian(mrl.dice_surrogate)
    assert best_error(lambda eps: fd_hessian(exact_return, theta, eps), dice) < 1e-6
    np.testing.assert_allclose(hessian(mrl.dice_surrogate, baseline=False), dice, atol=1e-10)
    naive = hessian(naive_surrogate)
    assert np.max(np.abs(naive - dice)) > 1e-2  # the test tells the score-function terms apart


def test_meta_gradient_matches_finite_differences_of_the_post_update_return():
  with jax.enable_x64(True):
    theta = jnp.array([[0.2, -0.4], [0.5, 0.1]])
    alpha = 0.3

    def meta_objective(t, first_order=False):
      inner = lambda q: expected_surrogate(q, mrl.dice_surrogate)
      return exact_return(mrl.gradient_step(inner, t, alpha, first_order))

    exact = lambda t: exact_return(t + alpha * jax.grad(exact_return)(t))  # J(theta + alpha grad J(theta))
    got = np.asarray(jax.jit(jax.grad(meta_objective))(theta)).reshape(-1)
    assert best_error(lambda eps: fd_gradient(exact, theta, eps), got, (1e-3, 1e-4, 1e-5)) < 1e-8
    first = np.asarray(jax.jit(jax.grad(lambda t: meta_objective(t, True)))(theta)).reshape(-1)
    post = theta + alpha * jax.grad(exact_return)(theta)
    np.testing.assert_allclose(first, np.asarray(jax.grad(exact_return)(post)).reshape(-1), atol=1e-12)
    assert np.max(np.abs(first - got)) > 1e-3


def test_inner_objective_gradient_is_the_mean_score_times_advantage_of_a_linear_gaussian():
  key = jax.random.PRNGKey(0)
  k1, k2, k3, k4 = jax.random.split(key, 4)
  n, t = 3, 5
  obs = np.asarray(jax.random.normal(k1, (n, t, 2)))
  act = np.asarray(jax.random.normal(k2, (n, t, 2)))
  adv = np.asarray(jax.random.normal(k3, (n, t)))
  valid = np.ones((n, t), bool)
  valid[1, 3:] = False
  params = mrl.GaussianParams(np.asarray(jax.random.normal(k4, (2, 2))) * 0.5, np.array([-0.3, 0.2], np.float32))
  linear = lambda w, x: x @ w
  eps = mrl.Episodes(obs, act, np.zeros((n, t)), valid, np.zeros((n, t)))
  objective = lambda p, e, a: mrl.inner_objective(p, linear, e, a)
  grads = jax.jit(jax.grad(objective))(params, eps, jnp.asarray(adv * valid))
  want_w, want_s, count = np.zeros((2, 2)), np.zeros(2), valid.sum()
  for i in range(n):
    for s in range(t):
      if valid[i, s]:
        sigma = np.exp(params.log_std)
        z = (act[i, s] - obs[i, s] @ params.mean) / sigma
        want_w += np.outer(obs[i, s], z / sigma) * adv[i, s] / count
        want_s += (z * z - 1) * adv[i, s] / count
  np.testing.assert_allclose(grads.mean, want_w, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(grads.log_std, want_s, rtol=1e-4, atol=1e-6)


def test_returns_and_linear_baseline_against_numpy():
  rewards = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
  want = [sum(0.9 ** (j - i) * rewards[j] for j in range(i, 4)) for i in range(4)]
  np.testing.assert_allclose(mrl.discounted_returns(jnp.asarray(rewards), 0.9), want, rtol=1e-6)
  rng = np.random.default_rng(0)
  obs = rng.normal(size=(3, 30, 2)).astype(np.float32)
  returns = rng.normal(size=(3, 30)).astype(np.float32)
  valid = np.ones((3, 30), bool)
  valid[2, 20:] = False
  t = np.arange(30)[:, None] / 100.0
  feats = np.stack([np.concatenate([o, o ** 2, t, t ** 2, t ** 3, np.ones_like(t)], 1) for o in obs])  # rllab's
  f, y = feats[valid].astype(np.float64), returns[valid].astype(np.float64)
  scale = np.sqrt(np.mean(f ** 2, 0)) + 1e-6  # columns scaled to unit RMS, then ridge 1e-5
  coef = np.linalg.solve((f / scale).T @ (f / scale) + 1e-5 * np.eye(8), (f / scale).T @ y)
  baseline = jax.jit(mrl.linear_baseline)
  got = baseline(jnp.asarray(obs), jnp.asarray(returns), jnp.asarray(valid))
  np.testing.assert_allclose(got, (feats / scale) @ coef, rtol=1e-3, atol=1e-3)
  far = baseline(jnp.asarray(obs * 1e3), jnp.asarray(returns), jnp.asarray(valid))  # clipped at 10
  assert np.isfinite(np.asarray(far)).all()
  eps = mrl.Episodes(jnp.asarray(obs), None, jnp.asarray(returns * valid), jnp.asarray(valid), None)
  adv = np.asarray(jax.jit(lambda e: mrl.advantages(e, 1.0))(eps))
  assert abs(adv[valid].mean()) < 1e-5 and abs(adv[valid].std() - 1) < 1e-3 and not adv[~valid].any()


@pytest.fixture(scope='module')
def small():
  env = navigation_2d(horizon=6)
  apply_fn = lambda w, x: x @ w['w'] + w['b']
  learner = mrl.maml_rl(apply_fn, env, trajectories=3, horizon=6, inner_lr=0.5, init_std=0.5)
  params = jax.jit(learner.init)(jax.random.PRNGKey(0), {'w': 0.3 * np.ones((2, 2), np.float32),
                                                        'b': np.array([0.05, -0.02], np.float32)})
  return env, apply_fn, learner, params


def test_episodes_under_vmap_equal_a_loop_and_numpy_dynamics(small):
  env, apply_fn, _, params = small
  goals = jnp.array([[0.05, 0.05], [-0.3, 0.2], [0.4, -0.45]], jnp.float32)
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  sample = lambda g, k: mrl.sample_episodes(env, apply_fn, params, NavigationParams(g), k, 3, 6)
  batched = jax.tree.map(np.asarray, jax.jit(jax.vmap(sample))(goals, keys))
  single = jax.jit(sample)
  log_prob = jax.jit(lambda obs, action: mrl.gaussian_log_prob(params, apply_fn, obs, action))
  goals, keys = np.asarray(goals), np.asarray(keys)
  for i in range(3):
    one = jax.tree.map(np.asarray, single(goals[i], keys[i]))
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(batched)):
      np.testing.assert_allclose(a, b[i], rtol=1e-5, atol=1e-6)
    position = np.cumsum(np.clip(np.asarray(one.action), -0.1, 0.1), axis=1)  # valid steps start at the origin
    offset = position - np.asarray(goals[i])
    reached = np.all(np.abs(offset) < 0.01, axis=-1)
    done = reached | (np.arange(6) == 5)
    valid = np.cumsum(done, 1) - done == 0
    np.testing.assert_array_equal(one.valid, valid)
    np.testing.assert_allclose(one.reward, np.where(valid, -np.linalg.norm(offset, axis=-1), 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.obs[:, 1:][valid[:, :-1]], position[:, :-1][valid[:, :-1]], atol=1e-6)
    logp = log_prob(one.obs, one.action)
    np.testing.assert_allclose(one.log_prob, logp, rtol=1e-5, atol=1e-5)
  assert batched.reward.shape == (3, 3, 6)


def test_learner_meta_gradient_adapt_predict_and_errors(small):
  env, apply_fn, learner, params = small
  goal = NavigationParams(jnp.array([0.3, -0.2], jnp.float32))
  keys = jax.random.split(jax.random.PRNGKey(2), 2)
  task = jax.jit(lambda keys, goal: Task(trial_split(keys[:1], goal), trial_split(keys[1:], goal)))(keys, goal)

  @jax.jit
  def everything(params, task):
    adapted = learner.adapt(params, task.support, steps=2)
    return learner.meta_grad(params, task), learner.predict(adapted, task.query.x)

  (grads, metrics), predicted = everything(params, task)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads)) and metrics['pre_return'] < 0
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 0
  same = jax.jit(lambda p, s: learner.adapt(p, s, steps=0))(params, task.support)
  assert all(bool(np.all(np.asarray(a) == b)) for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(params)))
  assert predicted.shape == (1, 3) and bool(np.all(np.asarray(predicted) < 0))
  with pytest.raises(ValueError, match=r'task rows must be \[rows, 6\]'):
    learner.predict(params, task.query.x[:, :5])
  with pytest.raises(ValueError, match='float vector actions'):
    mrl.maml_rl(apply_fn, bernoulli_bandit(3))
  with pytest.raises(ValueError, match=r'discount must be a number in \(0, 1\]'):
    mrl.maml_rl(apply_fn, env, discount=1.5)
  with pytest.raises(ValueError, match='trajectories must be an integer >= 1'):
    mrl.maml_rl(apply_fn, env, trajectories=0)


def test_navigation_oracle_walks_straight_to_the_goal():
  # goal (0.25, -0.1): positions (0.1, -0.1), (0.2, -0.1), (0.25, -0.1) -> done
  want = -(np.hypot(0.15, 0) + np.hypot(0.05, 0) + 0.0)
  np.testing.assert_allclose(mrl.navigation_oracle_return(jnp.array([0.25, -0.1])), want, atol=1e-6)
