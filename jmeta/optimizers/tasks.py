"""Task families for learned optimizers: `family.sample(key) -> task`, with `task.init(key)`, `task.batch(key)` and
`task.loss(params, key, batch)` pure, so that many inner trainings run under `jax.vmap` (learned_optimization's
`TaskFamily` / `Task`, Metz et al., 2022, arXiv:2203.11860).

A task is a pytree: its arrays (`data`, e.g. a quadratic's `W` and `y`) are leaves that `vmap` batches, and the
functions that read them (`spec`) are static. Families:
- `quadratic(dim=10)`: `f(theta) = ||W theta - y||^2` with `W`, `y` and the start N(0, 1) (Andrychowicz et al.,
  2016, arXiv:1606.04474, section 3.1).
- `digits(...)`: an MLP on scikit-learn's 8x8 digits (1,797 images, 10 classes; sklearn ships them), minibatches of
  the whole set; a task is a permutation of the labels and a start.
- `omniglot_classification(images, ...)`: conv4 trained on one N-way episode of Omniglot characters.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jmeta.checks import check_positive_int

PyTree = Any


class TaskSpec(NamedTuple):
  """The pure functions of a family, each taking a task's `data` first."""
  init: Callable[[PyTree, jax.Array], PyTree]
  batch: Callable[[PyTree, jax.Array], PyTree]
  loss: Callable[[PyTree, PyTree, jax.Array, PyTree], jax.Array]


@jax.tree_util.register_pytree_node_class
class InnerTask:
  """One optimization problem: `data` (arrays, batched by `vmap`) and `spec` (its functions, static)."""

  def __init__(self, data: PyTree, spec: TaskSpec):
    self.data, self.spec = data, spec

  def init(self, key: jax.Array) -> PyTree:
    """Initial parameters."""
    return self.spec.init(self.data, key)

  def batch(self, key: jax.Array) -> PyTree:
    """A minibatch (an empty array where the loss needs none)."""
    return self.spec.batch(self.data, key)

  def loss(self, params: PyTree, key: jax.Array, batch: PyTree) -> jax.Array:
    """The training loss (a scalar) of `params` on `batch`."""
    return self.spec.loss(self.data, params, key, batch)

  def tree_flatten(self):
    return (self.data,), self.spec

  @classmethod
  def tree_unflatten(cls, spec, children):
    return cls(children[0], spec)


class TaskFamily(NamedTuple):
  """`sample(key) -> InnerTask`; `name` for reports."""
  name: str
  sample: Callable[[jax.Array], InnerTask]


def _no_batch(data, key):
  del data, key
  return jnp.zeros((0,))


def quadratic(dim: int = 10) -> TaskFamily:
  """Random quadratics `||W theta - y||^2`, `W [dim, dim]`, `y [dim]` and `theta_0 [dim]` N(0, 1) (Andrychowicz et
  al., 2016, section 3.1: dim 10)."""
  dim = check_positive_int(dim, 'dim')

  def init(data, key):
    return jax.random.normal(key, (dim,))

  def loss(data, theta, key, batch):
    del key, batch
    w, y = data
    return jnp.sum(jnp.square(w @ theta - y))

  spec = TaskSpec(init, _no_batch, loss)

  def sample(key):
    kw, ky = jax.random.split(key)
    return InnerTask((jax.random.normal(kw, (dim, dim)), jax.random.normal(ky, (dim,))), spec)

  return TaskFamily(f'quadratic{dim}', sample)


def load_digits() -> tuple[jax.Array, jax.Array]:
  """scikit-learn's 8x8 digits: `x [1797, 64]` float32 in [0, 1], `y [1797]` int32. Needs scikit-learn (`pip
  install 'jmeta[optimizers]'`)."""
  try:
    from sklearn.datasets import load_digits as sklearn_digits
  except ImportError as e:
    raise ImportError("the digits task family needs scikit-learn, which ships the data: pip install "
                      "'jmeta[optimizers]' (or scikit-learn)") from e
  data = sklearn_digits()
  return jnp.asarray(data.data / 16.0, jnp.float32), jnp.asarray(data.target, jnp.int32)


def mlp_init(key: jax.Array, sizes: tuple[int, ...]) -> list:
  """Dense layers `[{'w': [a, b], 'b': [b]}, ...]` for `sizes` (inputs, hidden..., outputs), He-normal weights."""
  keys = jax.random.split(key, len(sizes) - 1)
  return [{'w': jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), 'b': jnp.zeros((b,))}
          for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def mlp_apply(params: list, x: jax.Array) -> jax.Array:
  """ReLU between the layers of `mlp_init`; `x [batch, in] -> [batch, out]`."""
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer['w'] + layer['b'])
  return x @ params[-1]['w'] + params[-1]['b']


def _cross_entropy(logits, labels):
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def digits(hidden: tuple[int, ...] = (32,), batch_size: int = 64,
           data: tuple[jax.Array, jax.Array] | None = None) -> TaskFamily:
  """An MLP (64, *hidden, 10; ReLU) trained by cross-entropy on minibatches of `batch_size` of scikit-learn's digits;
  each task permutes the labels and draws its own start and batches. `data`: `(x [n, 64], y [n])` in place of
  `load_digits()` (e.g. a part of it)."""
  batch_size = check_positive_int(batch_size, 'batch_size')
  hidden = tuple(check_positive_int(h, 'hidden') for h in hidden)
  x, y = load_digits() if data is None else data
  if x.ndim != 2 or x.shape[1] != 64 or y.shape != x.shape[:1]:
    raise ValueError(f'digits: data must be x [n, 64] and y [n]; got {list(x.shape)} and {list(y.shape)}')
  sizes = (64,) + hidden + (10,)

  def init(data, key):
    return mlp_init(key, sizes)

  def batch(data, key):
    idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
    return x[idx], data[y[idx]]

  def loss(data, params, key, batch):
    del data, key
    return _cross_entropy(mlp_apply(params, batch[0]), batch[1])

  spec = TaskSpec(init, batch, loss)
  return TaskFamily('digits', lambda key: InnerTask(jax.random.permutation(key, 10), spec))


def omniglot_classification(images: jax.Array, ways: int = 5, examples: int = 20, filters: int = 16,
                            blocks: int = 3) -> TaskFamily:
  """conv4 (stride-2 blocks of `filters`, BatchNorm with batch statistics) with a `ways`-way head, trained full-batch
  on `examples` drawings of each of `ways` characters drawn from `images [classes, 20, H, W, 1]` (e.g.
  `jmeta.datasets.omniglot.split_images(load(size=28))` pooled to 14x14)."""
  from jmeta.datasets.episodes import episodes
  from jmeta.models import Classifier, conv4_maml, functional
  ways = check_positive_int(ways, 'ways')
  sampler = episodes(images, ways, examples - 1, 1) if examples < jnp.shape(images)[1] else None
  if sampler is None:
    raise ValueError(f'omniglot_classification: examples must be below the {jnp.shape(images)[1]} per class')
  model = functional(Classifier(conv4_maml(filters, blocks), ways))
  example_x = jnp.zeros((2,) + tuple(jnp.shape(images)[2:]))

  def init(data, key):
    return model.init(key, example_x)

  def loss(data, params, key, batch):
    del key, batch
    x, y = data
    return _cross_entropy(model.apply(params, x), y)

  spec = TaskSpec(init, _no_batch, loss)

  def sample(key):
    task = sampler(key)
    return InnerTask((jnp.concatenate([task.support.x, task.query.x]), jnp.concatenate([task.support.y,
                                                                                         task.query.y])), spec)

  return TaskFamily(f'omniglot{ways}way', sample)
