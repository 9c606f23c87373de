"""What the metric learners share: checks of their inputs, the support embeddings, the query loss, and in the
registry the episodes their papers train on and how a learner is built on a dataset's embedding model."""

from __future__ import annotations

import operator
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jmeta import losses
from jmeta.base import MetaLearner, Params
from jmeta.experiments import Config, Data, Recipe
from jmeta.tasks import Split, Task, check_task, check_unmasked

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
  check_unmasked(split, where)
  x, y = split.x, split.y
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



# One episode a meta-step, Adam 1e-3, as Snell et al. (2017), Vinyals et al. (2016) and Sung et al. (2018) train.
OMNIGLOT_EPISODES = dict(meta_batch=1, steps=20_000, outer_lr=1e-3, outer_opt='adam', outer_decay=False)


def embedding_recipe(role: str, make: Callable[[Config, EmbedFn, int, tuple[int, ...]], MetaLearner]
                     ) -> Callable[[Config, Data], Recipe]:
  """A registry `build` for a learner on the dataset's `role` model ('embedding' or 'feature_map'):
  `make(config, embed_fn, ways, feature_shape)`, trained at `train_ways` and tested at `ways`. `feature_shape` is
  one example's embedding shape, e.g. `(64,)` or `(5, 5, 64)`."""

  def build(c: Config, data: Data) -> Recipe:
    model = data.model(role)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), data.example_x)
    shape = jax.eval_shape(model.apply, params, data.example_x).shape[1:]
    return Recipe(lambda key: model.init(key, data.example_x), make(c, model.apply, c.train_ways, shape),
                  make(c, model.apply, c.ways, shape))

  return build
