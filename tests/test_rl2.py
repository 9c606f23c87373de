"""RL^2 (jmeta.algorithms.rl2): GAE and the clipped surrogate against NumPy, the loss's gradient against a
teacher-forced Python loop, trials under vmap against a loop, a small bandit it learns, and the command line."""

import json
import logging
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmeta import envs, rollout
from jmeta.algorithms.rl2 import GRUPolicy, clipped_surrogate, gae, init_params, recurrent_policy, rl2, trial_split
from jmeta.tasks import Task

rl2_module = sys.modules['jmeta.algorithms.rl2']


def _numpy_gae(rewards, values, discount, lam):
  advantages, acc = np.zeros_like(rewards), 0.0
  for t in reversed(range(len(rewards))):
    following = values[t + 1] if t + 1 < len(rewards) else 0.0
    acc = rewards[t] + discount * following - values[t] + discount * lam * acc
    advantages[t] = acc
  return advantages


def test_gae_matches_a_numpy_loop():
  rng = np.random.default_rng(0)
  rewards, values = rng.random(9), rng.normal(size=9)
  with jax.enable_x64(True):
    jitted = jax.jit(gae)  # one program for every discount and lam
    for discount, lam in ((0.99, 0.3), (0.9, 0.0), (1.0, 1.0), (0.5, 0.95)):
      got = np.asarray(jitted(rewards, values, discount, lam))
      np.testing.assert_allclose(got, _numpy_gae(rewards, values, discount, lam), rtol=1e-12)
    # lam = 1 and no discount: the return to the end minus the value.
    got = np.asarray(jitted(rewards, values, 1.0, 1.0))
    np.testing.assert_allclose(got, np.cumsum(rewards[::-1])[::-1] - values, rtol=1e-12)


def test_clipped_surrogate_by_hand():
  # r = 0.5, A = 1: min(0.5, 0.8) = 0.5; r = 1, A = -1: -1; r = 1.5, A = 1: min(1.5, 1.2) = 1.2; r = 0.5, A = -1:
  # min(-0.5, -0.8) = -0.8.
  got = clipped_surrogate(jnp.log(jnp.array([0.5, 1.0, 1.5, 0.5])), jnp.array([1.0, -1.0, 1.0, -1.0]), 0.2)
  np.testing.assert_allclose(got, (0.5 - 1.0 + 1.2 - 0.8) / 4, rtol=1e-6)


def test_trial_split_keeps_keys_and_parameters():
  keys = jnp.array([[0xFFFFFFFF, 0], [0x80000001, 0x12345678], [7, 0xDEADBEEF]], jnp.uint32)
  probs = jnp.array([0.25, 0.5, 0.75])
  split = jax.tree.map(np.asarray, jax.jit(trial_split)(keys, envs.BanditParams(probs)))
  assert split.x.shape == (3, 4 + 3) and split.y.shape == (3, 3)
  from_halves = jax.jit(rl2_module._from_halves)
  for row, key in zip(split.x, keys):
    np.testing.assert_array_equal(from_halves(row[:4]), key)
  np.testing.assert_array_equal(split.x[:, 4:], np.broadcast_to(probs, (3, 3)))


ARMS, STEPS = 3, 6


@pytest.fixture(scope='module')
def small():
  env = envs.bernoulli_bandit(ARMS)
  module = GRUPolicy(ARMS, hidden=8)
  params = init_params(module, jax.random.PRNGKey(0), env)
  learner = rl2(module, env, STEPS, discount=0.9, gae_lambda=0.5, value_coef=0.7, entropy_coef=0.0)
  return env, module, params, learner


def test_loss_gradient_matches_a_teacher_forced_loop(small):
  env, module, params, learner = small
  task, key = env.sample_params(jax.random.PRNGKey(1)), jax.random.PRNGKey(2)
  split = trial_split(key[None], task)
  loss, metrics = jax.jit(learner.loss)(params, Task(split, split))
  grads, _ = jax.jit(learner.meta_grad)(params, Task(split, split))
  trajectory = jax.jit(lambda p: rollout(env, recurrent_policy(module), p, task, key, STEPS,
                                       carry=module.initial_carry()))(params)
  actions, rewards = np.asarray(trajectory.action), np.asarray(trajectory.reward)
  values = np.asarray(trajectory.aux[1], np.float64)
  advantages = _numpy_gae(rewards.astype(np.float64), values, 0.9, 0.5)
  targets = advantages + values

  def reference(p):
    carry, prev_a, prev_r = module.initial_carry(), jnp.array(-1), jnp.array(0.0)
    surrogate, value_loss = 0.0, 0.0
    for t in range(STEPS):
      carry, logits, value = module.apply(p, carry, jnp.zeros(1), prev_a, prev_r, jnp.array(True))
      surrogate += advantages[t] * jax.nn.log_softmax(logits)[actions[t]] / STEPS
      value_loss += 0.5 * (value - targets[t]) ** 2 / STEPS
      prev_a, prev_r = jnp.array(actions[t]), jnp.array(rewards[t])
    return -surrogate + 0.7 * value_loss, value_loss

  # The surrogate's value at ratio 1 is the mean advantage; its gradient is that of mean(A log pi).
  want_grads, value_loss = jax.jit(jax.grad(reference, has_aux=True))(params)
  np.testing.assert_allclose(loss, -advantages.mean() + 0.7 * value_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics['value_loss'], value_loss, rtol=1e-5)
  assert metrics['reward'] == rewards.sum()
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_trials_under_vmap_equal_a_loop_over_tasks(small):
  env, module, params, learner = small
  sample = rl2_module.trial_tasks(env, support_trials=1, query_trials=2)
  tasks = jax.tree.map(np.asarray, jax.jit(jax.vmap(sample))(jax.random.split(jax.random.PRNGKey(3), 4)))
  batched = np.asarray(jax.jit(jax.vmap(learner.predict, in_axes=(None, 0)))(params, tasks.query.x))
  assert batched.shape == (4, 2, STEPS)
  predict = jax.jit(learner.predict)

  @jax.jit
  def alone(halves, probs):
    """A plain rollout of the task with the trial's key."""
    return rollout(env, recurrent_policy(module), params, envs.BanditParams(probs), rl2_module._from_halves(halves),
                   STEPS, carry=module.initial_carry()).reward

  for i in range(4):
    np.testing.assert_array_equal(batched[i], predict(params, tasks.query.x[i]))
    # Each trial is a plain rollout of the task with its own key.
    np.testing.assert_array_equal(batched[i, 1], alone(tasks.query.x[i, 1, :4], tasks.query.y[i, 1]))


def test_bad_input_is_refused(small):
  env, module, params, learner = small
  with pytest.raises(ValueError, match='discrete actions'):
    rl2(module, envs.navigation_2d(), 10)
  with pytest.raises(ValueError, match='discount'):
    rl2(module, env, 10, discount=1.5)
  with pytest.raises(ValueError, match=r'rows \[trials, 7\]'):
    learner.predict(params, jnp.zeros((2, 5)))
  with pytest.raises(ValueError, match='raw uint32'):
    trial_split(jnp.zeros((1, 3), jnp.uint32), envs.BanditParams(jnp.zeros(ARMS)))


def test_learns_a_two_armed_bandit():
  """Two arms, 6 pulls: a policy that ignores what it saw wins 3 on average (2,000 tasks: a standard error of about
  0.03); 300 updates of RL^2 must beat that by more than 6 standard errors (3.38 measured)."""
  import optax
  from jmeta.training import fit, init_state
  env = envs.bernoulli_bandit(2)
  module = GRUPolicy(2, hidden=32)
  learner = rl2(module, env, 6, discount=1.0, gae_lambda=0.5)
  outer = optax.adam(3e-3)
  state = jax.jit(lambda k, p: init_state(learner, outer, k, p))(jax.random.PRNGKey(0),
                                                                 init_params(module, jax.random.PRNGKey(1), env))
  sample = rl2_module.trial_tasks(env)
  score = jax.jit(lambda p, k: jax.vmap(learner.predict, in_axes=(None, 0))(p, jax.vmap(sample)(
      jax.random.split(k, 2000)).query.x).sum(-1).mean())
  before = float(score(state.params, jax.random.PRNGKey(5)))
  state = fit(learner, outer, sample, state, meta_batch=64, steps=300, log_every=300, progress=False,
              grad_of_mean=True)
  after = float(score(state.params, jax.random.PRNGKey(5)))
  assert abs(before - 3.0) < 0.1 and after > 3.2, (before, after)


def test_command_line_trains_resumes_and_evaluates(tmp_path):
  from jmeta.cli import load_run, main
  args = ['train', '--algo', 'rl2', '--dataset', 'bandit', '--arms', '3', '--pulls', '5', '--hidden', '8',
          '--meta-batch', '4', '--log-every', '2', '--valid-episodes', '0', '--eval-episodes', '20', '--no-progress',
          '--out', str(tmp_path)]
  main(args + ['--steps', '2'])
  record = main(args + ['--steps', '4', '--resume'])   # resuming a killed run: tests/test_cli.py, for any learner
  assert set(record) == {'reward', 'ci95', 'regret', 'regret_ci95', 'episodes'} and 0 <= record['reward'] <= 5
  experiment, state = load_run(str(tmp_path))
  assert int(state.step) == 4 and experiment.config.discount == 0.99 and experiment.config.hidden == 8
  again = main(['eval', str(tmp_path), '--episodes', '20'])
  assert again['reward'] == record['reward'] and again['episodes'] == 20
  lines = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in lines] == [2, 4] and {'reward', 'entropy', 'value_loss'} <= set(lines[-1])


def test_init_params_compiles_once_for_equal_module_settings(caplog):
  """Equal policies (separate objects, settings no other test uses) on equal environments share one compiled
  program, which gives the same parameters for the same key."""
  keys = [jax.random.PRNGKey(i) for i in (0, 1, 0)]  # made here: their ops compile too
  envs_ = [envs.bernoulli_bandit(3) for _ in keys]  # separate Environment objects with equal observations
  with jax.log_compiles(), caplog.at_level(logging.WARNING):
    a, b, again = [init_params(GRUPolicy(3, hidden=5), k, env) for k, env in zip(keys, envs_)]
  compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Compiling ')]
  assert len(compiled) == 1 and compiled[0].startswith('Compiling jit(_init)'), compiled
  chex.assert_trees_all_equal(a, again)
  chex.assert_trees_all_equal_shapes(a, b)
  assert not np.array_equal(a['params']['policy']['kernel'], b['params']['policy']['kernel'])
