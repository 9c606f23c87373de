"""Evaluation: the same seed gives the same episodes; curves equal single evaluations; the interval formula."""

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
  # Batches of 50 and 25, multiples of the 25 episodes vmapped at a time: a remainder (64 = 2 x 25 + 14) would put
  # a second copy of the adapted model into each compiled program.
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
