"""Meta-test evaluation: adapt on fresh tasks, score the query set, report a mean with its 95% interval."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jmeta.base import MetaLearner, Params
from jmeta.checks import check_positive_int
from jmeta.tasks import Task

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
"""`score(predictions, targets) -> scalar` for one task's query set, e.g. `jmeta.losses.mse`."""


class Summary(NamedTuple):
  """A mean over episodes with the half-width of its 95% confidence interval (1.96 standard errors)."""
  mean: float
  ci95: float
  episodes: int


def summarize(values: np.ndarray) -> Summary:
  """`Summary` of per-episode values `[episodes]`."""
  values = np.asarray(values, np.float64)
  n = values.size
  half = 1.96 * values.std(ddof=1) / math.sqrt(n) if n > 1 else float('nan')
  return Summary(float(values.mean()), float(half), n)


def evaluator(learner: MetaLearner, sample: Callable[[jax.Array], Task], score: ScoreFn, *,
              batch_size: int = 250, **adapt_kwargs) -> Callable[[Params, jax.Array, int], np.ndarray]:
  """`scores(params, key, episodes) -> [episodes]`: each episode's score after adaptation on its support set.

  Episodes are drawn from `jax.random.split(key, episodes)`, so the same key gives the same episodes. They are
  run `batch_size` at a time under one compiled `vmap`. `adapt_kwargs` go to `learner.adapt` (e.g. `steps=5`).
  """
  check_positive_int(batch_size, 'batch_size')

  def one(params: Params, key: jax.Array) -> jax.Array:
    task = sample(key)
    adapted = learner.adapt(params, task.support, **adapt_kwargs)
    return score(learner.predict(adapted, task.query.x), task.query.y)

  run = jax.jit(jax.vmap(one, in_axes=(None, 0)))

  def scores(params: Params, key: jax.Array, episodes: int) -> np.ndarray:
    check_positive_int(episodes, 'episodes')
    keys = jax.random.split(key, episodes)
    pad = -episodes % batch_size
    keys = jnp.concatenate([keys, keys[:pad]]) if pad else keys
    out = [run(params, chunk) for chunk in keys.reshape(-1, batch_size, *keys.shape[1:])]
    return np.concatenate([np.asarray(o) for o in out])[:episodes]

  return scores
