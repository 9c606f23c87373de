"""Evaluation: the same seed gives the same episodes; curves equal single evaluations; the interval formula."""

import logging

import jax
import numpy as np

import jmeta
from helpers import mlp_apply, mlp_params


def test_summary_is_mean_and_1_96_standard_errors():
  values = np.array([1.0, 2.0, 3.0, 4.0])
  s = jmeta.summarize(values)
  assert s.mean == 2.5 and s.episodes == 4
  np.testing.assert_allclose(s.ci95, 1.96 * np.sqrt(((values - 2.5) ** 2).sum() / 3) / 2)


def test_same_key_same_episodes_and_curve_columns_equal_single_counts():
  learner = jmeta.maml(mlp_apply, 0.05, 1)
  params = mlp_params(jax.random.PRNGKey(0))
  sample = jmeta.datasets.sinusoid(5, 20)
  curve = jmeta.evaluator(learner, sample, jmeta.losses.mse, steps=range(4), batch_size=50)
  table = curve(params, jax.random.PRNGKey(1), 100)
  assert table.shape == (100, 4)
  for count in range(4):
    single = jmeta.evaluator(learner, sample, jmeta.losses.mse, steps=count, batch_size=25)
    np.testing.assert_allclose(single(params, jax.random.PRNGKey(1), 100), table[:, count], rtol=1e-5)
  # A longer evaluation extends a shorter one.
  np.testing.assert_allclose(curve(params, jax.random.PRNGKey(1), 150)[:100], table, rtol=1e-6)


def test_episode_scores_match_a_python_loop_over_sampled_tasks():
  learner = jmeta.maml(mlp_apply, 0.05, 2)
  params = mlp_params(jax.random.PRNGKey(0))
  sample = jmeta.datasets.sinusoid(5, 20)
  key = jax.random.PRNGKey(7)
  scores = jmeta.evaluator(learner, sample, jmeta.losses.mse, batch_size=8)(params, key, 10)
  adapt = jax.jit(learner.adapt)
  for i in range(10):
    task = sample(jax.random.fold_in(key, i))
    fast = adapt(params, task.support)
    np.testing.assert_allclose(scores[i], jmeta.losses.mse(mlp_apply(fast, task.query.x), task.query.y), rtol=1e-5)


def test_evaluations_of_any_length_share_one_compiled_program(caplog):
  """Validation, the final test and `jmeta eval --episodes n` differ only in the number of episodes: an argument
  of the evaluator's program, not part of its shape. Episode `i` scores the same in every one of them."""
  learner = jmeta.maml(mlp_apply, 0.05, 1)
  params = mlp_params(jax.random.PRNGKey(0))
  scores = jmeta.evaluator(learner, jmeta.datasets.sinusoid(5, 20), jmeta.losses.mse, batch_size=50, vmap_size=20)
  key = jax.random.PRNGKey(3)
  with jax.log_compiles(), caplog.at_level(logging.WARNING):
    long = scores(params, key, 120)  # calls of 50, 50 and 20 episodes
    short = scores(params, key, 7)  # one chunk of 20, 13 of them dropped
  compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Compiling ')]
  assert len(compiled) == 1 and compiled[0].startswith('Compiling jit(run)'), compiled
  assert long.shape == (120,) and short.shape == (7,) and np.all(long > 0)
  np.testing.assert_array_equal(short, long[:7])
