"""Meta-test evaluation: adapt on fresh tasks, score the query set, report a mean with its 95% interval."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jmeta import losses
from jmeta.base import MetaLearner, Params
from jmeta.checks import check_positive_int
from jmeta.sequences import SequenceTask
from jmeta.tasks import Task, as_pytree

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
              steps: int | Sequence[int] | None = None, batch_size: int = 250, vmap_size: int = 25,
              **adapt_kwargs) -> Callable[[Params, jax.Array, int], np.ndarray]:
  """`scores(params, key, episodes)`: each episode's score after adaptation on its support set.

  Episode `i` is `sample(jax.random.fold_in(key, i))`, so the same key gives the same episodes, and a longer
  evaluation extends a shorter one. Each call of the one compiled program scores up to `batch_size` episodes,
  `vmap_size` at a time under `vmap` (a loop over chunks), so memory is bounded by `vmap_size` episodes whatever
  `batch_size` is. The number of episodes is an argument of that program, not part of its shape: evaluations of
  any length (validation during training, the final test, `jmeta eval --episodes n`) share it, at the cost of
  scoring up to `vmap_size - 1` episodes more than asked and dropping them.

  Args:
    learner, sample, score: what to evaluate, on which tasks, and how to score a query set (its real examples,
      when the query set has a mask: `score` is then a mean over examples). For `jmeta.SequenceTask`s, `score`
      takes the logits of the whole sequence read from the start and its labels, and may return a vector (e.g.
      `jmeta.sequences.accuracy_by_instance`), giving `[episodes, k]` scores.
    steps: inner steps at test time (passed to `learner.adapt`); a sequence, e.g. `range(11)`, scores every
      count in one compiled program, and `scores` returns `[episodes, len(steps)]` instead of `[episodes]`.
    adapt_kwargs: other keyword arguments of `learner.adapt`.
  """
  check_positive_int(batch_size, 'batch_size')
  vmap_size = min(check_positive_int(vmap_size, 'vmap_size'), batch_size)
  size = -(-batch_size // vmap_size) * vmap_size  # episodes per call: whole chunks, so no remainder program
  single = steps is None or isinstance(steps, int)
  counts = (steps,) if single else tuple(steps)
  if not counts:
    raise ValueError('steps must name at least one number of inner steps')

  def adapt(params: Params, support, count):
    return learner.adapt(params, support, **adapt_kwargs, **({} if count is None else {'steps': count}))

  masked_score = losses.masked(score)

  @jax.jit
  def run(params: Params, key: jax.Array, start: jax.Array, count: jax.Array,
          sample: Callable[[jax.Array], Task]) -> jax.Array:
    """Scores of episodes `start, ..., start + count - 1` (`count <= size`) in rows `0..count-1` of `[size, k]`."""
    def one(index: jax.Array) -> jax.Array:
      task = sample(jax.random.fold_in(key, index))
      if isinstance(task, SequenceTask):  # read from the start; `steps` was refused below
        return score(learner.predict(learner.adapt(params), task), task.labels)[None]
      return jnp.stack([masked_score(learner.predict(adapt(params, task.support, c), task.query.x), task.query.y,
                                     task.query.mask) for c in counts])

    def chunk(c, out):
      first = c * vmap_size
      values = jax.vmap(one)(start + first + jnp.arange(vmap_size))
      return jax.lax.dynamic_update_slice_in_dim(out, values, first, axis=0)

    like = jax.eval_shape(one, start)
    out = jnp.zeros((size, *like.shape), like.dtype)
    return jax.lax.fori_loop(0, (count + vmap_size - 1) // vmap_size, chunk, out)

  tasks = as_pytree(sample)
  if steps is not None and isinstance(jax.eval_shape(sample, jax.random.PRNGKey(0)), SequenceTask):
    raise ValueError('steps: sequence learners adapt by reading the sequence, not by inner steps; leave steps unset')

  def scores(params: Params, key: jax.Array, episodes: int) -> np.ndarray:
    check_positive_int(episodes, 'episodes')
    calls = [(i, min(size, episodes - i)) for i in range(0, episodes, size)]
    out = np.concatenate([np.asarray(run(params, key, np.int32(i), np.int32(n), tasks))[:n] for i, n in calls])
    return out[:, 0] if single else out

  return scores


def correct_predictions(learner: MetaLearner, params: Params, tasks: Task, **adapt_kwargs) -> np.ndarray:
  """Whether each query example of each task is classified right, `[tasks, queries]` booleans.

  `tasks` is a meta-batch of fixed tasks (e.g. the 20 official one-shot runs of Lake et al., 2015); each is
  adapted on its support set and its query set predicted, under one compiled `vmap`.
  """

  def one(task: Task) -> jax.Array:
    adapted = learner.adapt(params, task.support, **adapt_kwargs)
    return jnp.argmax(learner.predict(adapted, task.query.x), axis=-1) == task.query.y

  return np.asarray(jax.jit(jax.vmap(one))(tasks))
