"""Prototypical Networks (Snell, Swersky and Zemel, 2017, arXiv:1703.05175) and the metric learners' shared checks."""

from __future__ import annotations

import operator
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jmeta import losses
from jmeta.base import MetaLearner, Params
from jmeta.tasks import Split, Task, check_task

EmbedFn = Callable[..., jax.Array]
"""`embed_fn(params, x) -> embeddings` for `x: [examples, *input_shape]`; with `transductive=False` a learner calls
`embed_fn(params, x, reference=support_x)` for the query (as `jmeta.models.conv4.functional(...).apply` accepts)."""


def check_ways(ways: Any, name: str) -> int:
  """`ways` as a Python int >= 1, or `ValueError`."""
  try:
    ways = operator.index(ways)
  except TypeError:
    raise ValueError(f'{name}: ways must be a static Python int; got {ways!r}') from None
  if ways < 1:
    raise ValueError(f'{name}: ways must be at least 1; got {ways}')
  return ways


def _concrete(a: jax.Array) -> np.ndarray | None:
  try:
    return np.asarray(a)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def check_labels(split: Split, ways: int, where: str) -> None:
  """Raises `ValueError` unless `split.y` is integer class labels `[examples]` in `0..ways-1`.

  Shapes and dtypes are checked at trace time; the values only when they are concrete (outside `jit` and `vmap`).
  """
  x, y = split
  if jnp.ndim(x) < 1 or jnp.ndim(y) != 1 or jnp.shape(x)[0] != jnp.shape(y)[0]:
    hint = (f' (one-hot targets with {jnp.shape(y)[1]} columns for ways={ways}?)' if jnp.ndim(y) == 2 else '')
    raise ValueError(f'{where}: expected x [examples, ...] and integer labels y [examples]; got x {jnp.shape(x)}, '
                     f'y {jnp.shape(y)}{hint}')
  if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
    raise ValueError(f'{where}: labels must be integers in 0..{ways - 1}; got dtype {jnp.result_type(y)}')
  values = _concrete(y)
  if values is not None and values.size and (values.min() < 0 or values.max() >= ways):
    raise ValueError(f'{where}: labels must lie in 0..{ways - 1} for ways={ways}; got values from {values.min()} '
                     f'to {values.max()}')


def check_support(support: Split, ways: int, name: str) -> None:
  """`check_labels` for a support set, which also needs at least `ways` examples."""
  check_labels(support, ways, f'{name}: support')
  n = jnp.shape(support.y)[0]
  if n < ways:
    raise ValueError(f'{name}: the support set has {n} examples but ways={ways}; each class needs at least one')


def check_classification_task(task: Task, ways: int, name: str) -> None:
  """`check_task`, then `check_support` and `check_labels` for the query."""
  check_task(task, f'{name} task')
  check_support(task.support, ways, name)
  check_labels(task.query, ways, f'{name}: query')


def check_embeddings(z: jax.Array, n: int, name: str, dim: int | None = None) -> jax.Array:
  """Raises `ValueError` unless `z` is `[n, dim]` (any `dim` when None); returns `z`."""
  if jnp.ndim(z) != 2 or jnp.shape(z)[0] != n or (dim is not None and jnp.shape(z)[1] != dim):
    want = f'[{n}, {dim if dim is not None else "dim"}]'
    raise ValueError(f'{name}: embed_fn must return embeddings {want} for {n} examples; got shape {jnp.shape(z)}')
  return z


def embed(embed_fn: EmbedFn, params: Params, x: jax.Array, reference: jax.Array | None) -> jax.Array:
  """`embed_fn(params, x)`, or `embed_fn(params, x, reference=reference)` when a reference is given."""
  return embed_fn(params, x) if reference is None else embed_fn(params, x, reference=reference)


def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """Squared Euclidean distances `[n, m]` between rows of `a: [n, dim]` and `b: [m, dim]`."""
  return jnp.sum(jnp.square(a[:, None, :] - b[None, :, :]), axis=-1)


def class_means(z: jax.Array, labels: jax.Array, ways: int) -> jax.Array:
  """Mean of the rows of `z: [examples, dim]` per class of integer `labels: [examples]`; `[ways, dim]`.

  A class without examples gets the zero vector.
  """
  one_hot = jax.nn.one_hot(labels, ways, dtype=z.dtype)
  counts = jnp.sum(one_hot, axis=0)
  return (one_hot.T @ z) / jnp.maximum(counts, 1)[:, None]


class ProtoNetState(NamedTuple):
  """What `adapt` returns.

  Attributes:
    params: the meta-parameters, to embed queries.
    prototypes: `[ways, dim]`, the class means of the support embeddings.
    reference: the support inputs when queries are embedded non-transductively, else None.
  """
  params: Params
  prototypes: jax.Array
  reference: jax.Array | None


class SupportEmbeddings(NamedTuple):
  """What Matching and Siamese networks' `adapt` returns.

  Attributes:
    params: the meta-parameters, to embed queries (and compare them).
    support: `[support, dim]`, the support embeddings.
    labels: `[support, ways]`, the one-hot support labels.
    reference: the support inputs when queries are embedded non-transductively, else None.
  """
  params: Params
  support: jax.Array
  labels: jax.Array
  reference: jax.Array | None


def query_cross_entropy(adapt: Callable, predict: Callable, ways: int, name: str) -> Callable:
  """`loss(params, task) -> (loss, {'loss', 'accuracy'})`: cross-entropy of `predict(adapt(...))` on the query set,
  whose outputs are logits or log-probabilities `[queries, ways]`."""

  def loss(params: Params, task: Task) -> tuple[jax.Array, dict[str, jax.Array]]:
    check_classification_task(task, ways, name)
    logits = predict(adapt(params, task.support), task.query.x)
    value = losses.cross_entropy(logits, task.query.y)
    return value, {'loss': value, 'accuracy': losses.accuracy(logits, task.query.y)}

  return loss


def protonet(embed_fn: EmbedFn, ways: int, *, transductive: bool = True) -> MetaLearner:
  """Prototypical Networks (Snell, Swersky and Zemel, 2017, arXiv:1703.05175).

  Each class's prototype is the mean support embedding; a query's logits are its negative squared Euclidean
  distances to the prototypes; the loss is the query cross-entropy.

  Args:
    embed_fn: `embed_fn(params, x) -> [examples, dim]` for `x: [examples, *input_shape]`.
    ways: number of classes; labels are integers in `0..ways-1`.
    transductive: if False, queries are embedded as `embed_fn(params, x, reference=support.x)` so that batch
      statistics come from the support set and a query's embedding does not depend on the other queries.

  Returns:
    A `MetaLearner` over `params = {'embed': model_params}`. `adapt(params, support) -> ProtoNetState`;
    `predict(state, x) -> [examples, ways]` logits; `loss(params, task) -> (loss, {'loss', 'accuracy'})`.
  """
  ways = check_ways(ways, 'protonet')

  def init(key: jax.Array, model_params: Params) -> Params:
    del key
    return {'embed': model_params}

  def adapt(params: Params, support: Split) -> ProtoNetState:
    check_support(support, ways, 'protonet')
    n = jnp.shape(support.y)[0]
    z = check_embeddings(embed_fn(params['embed'], support.x), n, 'protonet (support)')
    return ProtoNetState(params, class_means(z, support.y, ways), None if transductive else support.x)

  def predict(state: ProtoNetState, x: jax.Array) -> jax.Array:
    z = embed(embed_fn, state.params['embed'], x, state.reference)
    z = check_embeddings(z, jnp.shape(x)[0], 'protonet (query)', jnp.shape(state.prototypes)[1])
    return -squared_distances(z, state.prototypes)

  loss = query_cross_entropy(adapt, predict, ways, 'protonet')
  return MetaLearner(init, adapt, predict, loss, jax.grad(loss, has_aux=True))
