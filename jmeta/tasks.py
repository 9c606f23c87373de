"""The data model: a task is a support set and a query set; a meta-batch adds a leading axis.

A split may carry a mask, so that tasks with a varying number of points (a neural process samples its context size
per task) have fixed shapes under `jax.jit` and `jax.vmap`. The other task kinds (label-offset sequences,
environments) are in `jmeta.sequences` and `jmeta.envs`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jmeta.sequences import SequenceTask, check_sequence_task


class Split(NamedTuple):
  """Labelled examples of one task.

  Attributes:
    x: inputs, `[examples, *input_shape]`.
    y: targets, `[examples, *target_shape]` (class indices `[examples]` for classification).
    mask: `[examples]` bool, True for the real examples and False for padding, or None (the default) when every
      example is real. Padding lets a task with a varying number of points keep fixed shapes: a function-regression
      task (`jmeta.datasets.gp_functions`) is a `Task` whose support set is the context points and whose query set
      is the target points, each padded to its maximum. Losses average over the real examples only
      (`jmeta.losses.masked`); the values under padding are arbitrary but finite, and change no result.

  The mask sits on the split rather than beside the task because `adapt(params, support)` sees only the split:
  a neural process aggregates the real context points of `support` and MAML takes inner steps on their loss, from
  the same `Task`. With `mask=None` the split has the leaves `(x, y)` it always had.
  """
  x: jax.Array
  y: jax.Array
  mask: jax.Array | None = None


class Task(NamedTuple):
  """One few-shot task: adapt on `support`, evaluate on `query`.

  A meta-batch is a `Task` whose leaves carry a leading task axis, as produced by `jax.vmap` of a sampler.
  """
  support: Split
  query: Split


def _shape(a: Any) -> tuple[int, ...]:
  return tuple(np.shape(a))


def check_task(task: Task, name: str = 'task') -> None:
  """Raises `ValueError` unless `task` is one well-formed task.

  Checks that x and y of each split agree on the number of examples (and a mask, if any, is bool `[examples]`) and
  that support and query agree on the input and target shapes. Runs on shapes only, so it works on tracers at trace
  time.
  """
  if not isinstance(task, Task) or not all(isinstance(s, Split) for s in task):
    raise ValueError(f'{name} must be a jmeta.Task(support=Split(x, y), query=Split(x, y)); got {type(task).__name__}')
  for part in ('support', 'query'):
    split = getattr(task, part)
    xs, ys = _shape(split.x), _shape(split.y)
    if len(xs) < 1 or len(ys) < 1:
      raise ValueError(f'{name}.{part}: x and y need a leading examples axis; got x {xs}, y {ys}')
    if xs[0] != ys[0]:
      raise ValueError(f'{name}.{part}: x has {xs[0]} examples but y has {ys[0]} (x {xs}, y {ys})')
    if split.mask is not None:
      ms = _shape(split.mask)
      if ms != xs[:1] or jnp.result_type(split.mask) != jnp.bool_:
        raise ValueError(f'{name}.{part}: mask must be bool [examples] = [{xs[0]}]; got {jnp.result_type(split.mask)} '
                         f'{list(ms)}')
  sx, qx = _shape(task.support.x), _shape(task.query.x)
  if sx[1:] != qx[1:]:
    raise ValueError(f'{name}: support inputs have shape {sx[1:]} per example but query inputs have {qx[1:]}; '
                     'they must match')
  sy, qy = _shape(task.support.y), _shape(task.query.y)
  if sy[1:] != qy[1:]:
    raise ValueError(f'{name}: support targets have shape {sy[1:]} per example but query targets have {qy[1:]}; '
                     'they must match')


def task_spec(task: Task) -> Task:
  """The shapes and dtypes of `task` as `jax.ShapeDtypeStruct` leaves (what `check_meta_batch` compares to)."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(_shape(a), jnp.result_type(a)), task)


def check_meta_batch(batch: Task, spec: Task | None = None) -> int:
  """Raises `ValueError` unless `batch` is a meta-batch of tasks; returns the number of tasks.

  Args:
    batch: a `Task` (or a `jmeta.SequenceTask`) whose leaves have a leading task axis, `[tasks, examples, ...]`.
    spec: the shapes of one task (a task or `task_spec(task)`). With it, a single task passed where a meta-batch
      is expected is caught even when its shapes happen to look batched.
  """
  if not isinstance(batch, (Task, SequenceTask)):
    raise ValueError('meta-batch must be a jmeta.Task or a jmeta.SequenceTask with a leading task axis; got '
                     f'{type(batch).__name__}')
  leaves = jax.tree_util.tree_leaves_with_path(batch)
  sizes = {jax.tree_util.keystr(p): _shape(a)[:1] for p, a in leaves}
  if len(set(sizes.values())) != 1 or () in sizes.values():
    raise ValueError(f'meta-batch leaves must share a leading task axis; got leading sizes {sizes}')
  if spec is not None:
    if jax.tree.structure(batch) != jax.tree.structure(spec):
      raise ValueError('meta-batch and the spec of one task differ in structure (a split with a mask against one '
                       f'without?): {jax.tree.structure(batch)} vs {jax.tree.structure(spec)}')
    for (path, a), s in zip(leaves, jax.tree.leaves(spec)):
      want = (None, *_shape(s))
      if _shape(a)[1:] != want[1:]:
        where = jax.tree_util.keystr(path)
        raise ValueError(f'meta-batch{where} has shape {_shape(a)}; expected [tasks, {", ".join(map(str, want[1:]))}]'
                         f' (one task has {_shape(s)}). Did you pass a single task without a leading task axis?')
  per_task = jax.tree.map(lambda a: jax.ShapeDtypeStruct(_shape(a)[1:], jnp.result_type(a)), batch)
  if isinstance(batch, SequenceTask):
    check_sequence_task(per_task, name='each task of the meta-batch')
  else:
    check_task(per_task, 'each task of the meta-batch')
  return next(iter(sizes.values()))[0]


def all_examples(task: Task) -> Split:
  """The support and query examples of one task as a single split, support first (masked if either split is)."""
  s, q = task.support, task.query
  mask = None
  if s.mask is not None or q.mask is not None:
    mask = jnp.concatenate([real(s), real(q)])
  return Split(jnp.concatenate([s.x, q.x]), jnp.concatenate([s.y, q.y]), mask)


def real(split: Split) -> jax.Array:
  """`split.mask`, or all True when it is None: `[examples]` bool."""
  if split.mask is not None:
    return split.mask
  return jnp.ones(_shape(split.x)[:1], jnp.bool_)


def check_unmasked(split: Split, name: str) -> None:
  """Raises `ValueError` if `split` has a mask, for learners that need every example real (say which)."""
  if split.mask is not None:
    raise ValueError(f'{name}: a split with a mask (padded examples) is not supported here; got a mask of shape '
                     f'{_shape(split.mask)}. Use a learner that honours masks (maml, fomaml, anil, metasgd, reptile, '
                     'pretrained) or tasks of fixed size without a mask.')


def as_pytree(sample: Callable[[jax.Array], Task]) -> jax.tree_util.Partial:
  """`sample` as a pytree, so it can be passed to a jitted function as an argument.

  A sampler holding its dataset as `Partial` leaves (as `jmeta.datasets.episodes` does) then hands the dataset to
  the compiled program as a buffer rather than embedding it as a constant; any other function is wrapped as is.
  """
  return sample if isinstance(sample, jax.tree_util.Partial) else jax.tree_util.Partial(sample)
