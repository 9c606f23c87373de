"""N-way K-shot episodes drawn on the device from a dataset array, as pure functions of a PRNG key."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jmeta.checks import check_positive_int
from jmeta.tasks import Split, Task


def episode_options() -> tuple:
  """The registry options of every episodic classification dataset: ways, train_ways, shots, queries and
  eval_queries, in the order `jmeta train --help` lists them."""
  from jmeta.experiments.registry import Option
  return (
      Option('ways', 'classes per test episode (default 5)', minimum=2),
      Option('train_ways', 'classes per training episode (default: published, else --ways)', minimum=2,
             default=lambda f: f['ways']),
      Option('shots', 'support examples per class (default 1)'),
      Option('queries', 'query examples per class while training (default: published, else 15)'),
      Option('eval_queries', 'query examples per class at validation and test time (default 15)'),
  )


def _choice(key: jax.Array, n: int, k: int) -> jax.Array:
  """`k` distinct integers of `[0, n)` in a uniformly random order, `[k]` int32.

  For `k <= 64` it draws them one by one: `r_i` uniform in `[0, n - i)` becomes the `r_i`-th value not drawn yet,
  which is `r_i` plus the number of drawn values `s` with `s - rank(s) <= r_i`. This `lax.scan` of `k` steps costs
  `O(k^3)` whatever `n`, and has no sort, which XLA:CPU is slow to run and to compile: drawing 5 of 4,400 classes
  is hundreds of times faster than `jax.random.choice(..., replace=False)`. Larger `k` take a random permutation.
  """
  if k > 64:
    return jax.random.permutation(key, n)[:k].astype(jnp.int32)
  ranks = jax.random.randint(key, (k,), 0, n - jnp.arange(k, dtype=jnp.int32), dtype=jnp.int32)

  def step(drawn, i):
    below = jnp.sum(drawn[None, :] < drawn[:, None], axis=1, dtype=jnp.int32)
    value = ranks[i] + jnp.sum(drawn - below <= ranks[i], dtype=jnp.int32)
    return drawn.at[i].set(value), None

  drawn, _ = jax.lax.scan(step, jnp.full((k,), 2 * n + k, jnp.int32), jnp.arange(k))
  return drawn


def _check_key(key: jax.Array) -> None:
  """Raises `ValueError` unless `key` is one PRNG key (a typed key `[]` or a raw key `[2]`), not a batch of them."""
  typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  if jnp.ndim(key) != (0 if typed else 1):
    raise ValueError(f'sampler takes one PRNG key; got shape {jnp.shape(key)}. For a meta-batch use '
                     'jax.vmap(sampler)(jax.random.split(key, tasks))')


def episodes(images: jax.Array, ways: int, shots: int, queries: int, *,
             rotations: bool = False) -> Callable[[jax.Array], Task]:
  """An N-way K-shot sampler: `sampler(key) -> Task`, pure, for use inside `jax.jit` and `jax.vmap`.

  Each episode draws `ways` distinct classes in a random order (class `i` of the draw gets label `i`), then
  `shots + queries` distinct examples of each class: the first `shots` go to the support set, the rest to the
  query set, so the two are disjoint. Both sets are ordered by label: support `y = [0]*shots + [1]*shots + ...`.
  A meta-batch is `jax.vmap(sampler)(jax.random.split(key, tasks))`. This is the protocol of Vinyals et al. (2016,
  arXiv:1606.04080) and Finn et al. (2017, arXiv:1703.03400).

  The sampler is a `jax.tree_util.Partial` holding `images` as a pytree leaf: pass it to a jitted function as an
  argument (as `jmeta.fit` and `jmeta.evaluator` do) and the dataset stays a device buffer instead of being
  embedded in the compiled program as a constant.

  Args:
    images: `[classes, examples_per_class, *example_shape]`, e.g. `[classes, 20, 28, 28, 1]` for Omniglot.
    ways: classes per episode, `1 <= ways <= classes` (`4 * classes` with rotations).
    shots: support examples per class, `>= 1`.
    queries: query examples per class, `>= 1`, with `shots + queries <= examples_per_class`.
    rotations: draw from `4 * classes` classes, class `k * classes + c` being class `c` rotated by `k * 90` degrees
      (`jnp.rot90` on axes 2 and 3 of `images`, which must be square there): the same classes, layout and draws as
      `episodes(jmeta.datasets.omniglot.rotate(images), ...)` without storing the rotated copies.

  Returns:
    `sampler(key) -> Task` with support x `[ways * shots, *example_shape]`, y `[ways * shots]` int32 in
    `0..ways-1`, and query x `[ways * queries, *example_shape]`, y `[ways * queries]`.

  Raises:
    ValueError: at construction, for non-positive counts, `ways` above the number of classes, or
      `shots + queries` above the examples per class.
  """
  ways, shots, queries = (check_positive_int(v, n) for v, n in ((ways, 'ways'), (shots, 'shots'), (queries, 'queries')))
  shape = tuple(jnp.shape(images))
  if len(shape) < 2:
    raise ValueError(f'images must be [classes, examples_per_class, *example_shape]; got shape {shape}')
  num_classes, per_class = shape[0], shape[1]
  if rotations and (len(shape) < 4 or shape[2] != shape[3]):
    raise ValueError(f'rotations=True needs square images [classes, examples, H, W, ...] with H == W; got {shape}')
  total = num_classes * 4 if rotations else num_classes
  if ways > total:
    raise ValueError(f'ways={ways} exceeds the {total} classes of the dataset {shape}'
                     f'{" with rotations" if rotations else ""}; need 1 <= ways <= {total}')
  if shots + queries > per_class:
    raise ValueError(f'shots + queries = {shots} + {queries} = {shots + queries} exceeds the {per_class} examples '
                     f'per class of the dataset {shape}; need shots + queries <= {per_class}')
  sampler = functools.partial(_episode, ways=ways, shots=shots, queries=queries, rotations=rotations)
  return jax.tree_util.Partial(sampler, jnp.asarray(images))


def _episode(images: jax.Array, key: jax.Array, *, ways: int, shots: int, queries: int, rotations: bool) -> Task:
  """One episode of `episodes(images, ways, shots, queries, rotations=rotations)` for `key`."""
  _check_key(key)
  num_classes, per_class, example_shape = images.shape[0], images.shape[1], images.shape[2:]
  total = num_classes * 4 if rotations else num_classes
  draws = shots + queries
  class_key, example_key = jax.random.split(key)
  classes = _choice(class_key, total, ways)
  rows = jnp.broadcast_to(jnp.arange(per_class, dtype=jnp.int32), (ways, per_class))
  examples = jax.random.permutation(example_key, rows, axis=1, independent=True)[:, :draws]
  x = images[(classes % num_classes)[:, None], examples]
  if rotations:
    turned = jnp.stack([jnp.rot90(x, k, axes=(2, 3)) for k in range(4)])
    x = turned[classes // num_classes, jnp.arange(ways)]
  labels = jnp.arange(ways, dtype=jnp.int32)
  support = Split(x[:, :shots].reshape(ways * shots, *example_shape), jnp.repeat(labels, shots))
  query = Split(x[:, shots:].reshape(ways * queries, *example_shape), jnp.repeat(labels, queries))
  return Task(support, query)

