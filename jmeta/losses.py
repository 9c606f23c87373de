"""Per-example losses reduced to a mean, and metrics, for `predictions` against `targets`."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def mse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean squared error over all elements; `predictions` and `targets` must have the same shape."""
  if predictions.shape != targets.shape:
    raise ValueError(f'mse: predictions {predictions.shape} and targets {targets.shape} must have the same shape')
  return jnp.mean(jnp.square(predictions - targets))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy. `logits: [examples, classes]`, integer `labels: [examples]`."""
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(f'cross_entropy: expected logits [examples, classes] and labels [examples]; '
                     f'got {logits.shape} and {labels.shape}')
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of examples whose largest logit is the label. `logits: [examples, classes]`, `labels: [examples]`."""
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Mean of `values: [examples, ...]` over the examples where `mask: [examples]` bool is True (all if None).

  Trailing axes are averaged too. With no real example the result is 0, not NaN, and so is its gradient.
  """
  if mask is None:
    return jnp.mean(values)
  if mask.shape != values.shape[:1]:
    raise ValueError(f'masked_mean: mask must be [examples] = [{values.shape[0]}]; got {list(mask.shape)}')
  per_example = jnp.mean(values.reshape(values.shape[0], -1), axis=1)
  weights = mask.astype(per_example.dtype)
  return jnp.sum(jnp.where(mask, per_example, 0)) / jnp.maximum(jnp.sum(weights), 1)


def masked(fn: Callable[[jax.Array, jax.Array], Any]) -> Callable[..., Any]:
  """`fn(predictions, targets)` restricted to the real examples: `masked(fn)(predictions, targets, mask)`.

  `fn` is a mean over examples (`mse`, `cross_entropy`, `accuracy`, or a dict of such metrics). With `mask=None`
  this is `fn(predictions, targets)` itself; with a mask `[examples]` it is the masked mean of `fn` applied to each
  example alone, which equals `fn` of the real examples only, whatever the padding holds.
  """

  def apply(predictions: jax.Array, targets: jax.Array, mask: jax.Array | None = None) -> Any:
    if mask is None:
      return fn(predictions, targets)
    each = jax.vmap(lambda p, t: fn(p[None], t[None]))(predictions, targets)
    return jax.tree.map(lambda v: masked_mean(v, mask), each)

  return apply
