"""Per-example losses reduced to a mean, and metrics, for `predictions` against `targets`."""

from __future__ import annotations

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
