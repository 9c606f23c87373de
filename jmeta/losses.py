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


def normal_log_prob(x: jax.Array, loc: jax.Array, scale: jax.Array) -> jax.Array:
  """The log-density of `N(loc, scale**2)` at `x`, elementwise (arrays broadcast)."""
  # Two closed forms (this one and `normal_kl`) instead of distrax, which would bring TensorFlow Probability.
  z = (x - loc) / scale
  return -0.5 * jnp.square(z) - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi)


def normal_kl(loc_q: jax.Array, scale_q: jax.Array, loc_p: jax.Array, scale_p: jax.Array) -> jax.Array:
  """`KL(N(loc_q, scale_q**2) || N(loc_p, scale_p**2))`, elementwise:
  `log(scale_p / scale_q) + (scale_q**2 + (loc_q - loc_p)**2) / (2 scale_p**2) - 1/2`."""
  return (jnp.log(scale_p) - jnp.log(scale_q) + (jnp.square(scale_q) + jnp.square(loc_q - loc_p))
          / (2 * jnp.square(scale_p)) - 0.5)


def gaussian_log_likelihood(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean over examples of the log-density of `targets` under Gaussian predictions, summed over target features.

  Args:
    predictions: `[examples, 2 * dim]`, the means then the standard deviations (a neural process's `predict`), or
      `[examples, samples, 2 * dim]`, an equally weighted mixture of `samples` such Gaussians per example (a latent
      neural process's predictions for `samples` draws of its latent variable).
    targets: `[examples, dim]`.

  Returns:
    A scalar: `mean_i log p(targets_i)`, with `p` the Gaussian, or the mixture (`logsumexp` over samples minus
    `log(samples)`).
  """
  if targets.ndim != 2 or predictions.ndim not in (2, 3) or predictions.shape[0] != targets.shape[0] or (
      predictions.shape[-1] != 2 * targets.shape[-1]):
    raise ValueError('gaussian_log_likelihood: expected predictions [examples, 2 * dim] or [examples, samples, '
                     f'2 * dim] and targets [examples, dim]; got {predictions.shape} and {targets.shape}')
  mean, std = jnp.split(predictions, 2, axis=-1)
  if predictions.ndim == 2:
    return jnp.mean(jnp.sum(normal_log_prob(targets, mean, std), axis=-1))
  per_sample = jnp.sum(normal_log_prob(targets[:, None], mean, std), axis=-1)
  return jnp.mean(jax.nn.logsumexp(per_sample, axis=1) - jnp.log(predictions.shape[1]))


def gaussian_nll(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """`-gaussian_log_likelihood(predictions, targets)`, a loss."""
  return -gaussian_log_likelihood(predictions, targets)
