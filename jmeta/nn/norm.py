"""Batch normalisation with batch statistics, one pass over the input each way, exact to every order.

`flax.linen.BatchNorm(use_running_average=False, use_fast_variance=False)` computes the mean and then the variance
of `x - mean` (two passes), and its derivatives are whatever autodiff makes of that; `use_fast_variance=True` reads
`x` once but loses float32 precision when the mean is large against the spread (`E[x^2] - E[x]^2`). Here the
statistics come from one pass over `x - shift`, where `shift` (the spatial mean of the first example) is close to
the mean, so the difference of moments keeps its precision; and the derivatives are the closed form of batch
normalisation's gradient (Ioffe & Szegedy, 2015, arXiv:1502.03167, section 3): a `jax.custom_jvp` whose tangent
rule is linear and plain JAX, so forward mode, reverse mode (its transpose is the closed form), second order (MAML)
and forward-over-reverse (iMAML's Hessian-vector products) all differentiate it as they would the plain formula.
What it saves on XLA:CPU is measured in `benchmarks/conv_variants.py` (notes in
`benchmarks/notes/conv_variants.md`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

Array = jax.Array


def batch_norm(x: Array, scale: Array, bias: Array, mask: Array | None = None, epsilon: float = 1e-5) -> Array:
  """`(x - mean) / sqrt(var + epsilon) * scale + bias`, with the mean and variance of `x` over all axes but the last.

  Args:
    x: `[*batch, features]`; the statistics are taken over every axis but the last.
    scale, bias: `[features]`.
    mask: None, or booleans broadcastable to `x` (as `flax.linen.BatchNorm`'s `mask`): the statistics are those
      of the entries where it is True; every entry is normalised with them.
    epsilon: added to the variance.

  Returns:
    `[*batch, features]`, in the dtype of `x`.
  """
  if x.ndim < 2:
    raise ValueError(f'batch_norm: inputs need a batch and a feature axis, got shape {x.shape}')
  if scale.shape != (x.shape[-1],) or bias.shape != (x.shape[-1],):
    raise ValueError(f'batch_norm: scale {scale.shape} and bias {bias.shape} must be [{x.shape[-1]}] for inputs '
                     f'{x.shape}')
  if mask is not None:
    mask = jnp.asarray(mask, bool)
    fits = mask.ndim <= x.ndim and all(m in (1, n) for m, n in zip(mask.shape[::-1], x.shape[::-1]))
    if not fits:
      raise ValueError(f'batch_norm: mask {mask.shape} does not broadcast to inputs {x.shape}')
    mask = jnp.reshape(mask, (1,) * (x.ndim - mask.ndim) + mask.shape)
  return _batch_norm(x, scale, bias, mask, float(epsilon))


def _stats(x, mask):
  """Per-feature mean, variance and count of the (masked) entries of `x`, from one pass over `x - shift`."""
  axes = tuple(range(x.ndim - 1))
  # Any shift gives the same moments in exact arithmetic; one near the mean keeps E[d^2] - E[d]^2 precise.
  shift = jax.lax.stop_gradient(jnp.mean(jnp.reshape(x[0], (-1, x.shape[-1])), 0))  # the first example's mean
  d = x - shift
  if mask is None:
    count = jnp.asarray(x.size // x.shape[-1], x.dtype)
    s1, s2 = jnp.sum(d, axes), jnp.sum(d * d, axes)
  else:
    m = mask.astype(x.dtype)
    count = jnp.sum(jnp.broadcast_to(m, x.shape[:-1] + m.shape[-1:]), axes)
    s1, s2 = jnp.sum(d * m, axes), jnp.sum(d * d * m, axes)
  mean_d = s1 / count
  var = jnp.maximum(s2 / count - mean_d * mean_d, 0)
  return shift + mean_d, var, count


def _compute_dtype(x):
  return jnp.promote_types(x.dtype, jnp.float32)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _batch_norm(x, scale, bias, mask, epsilon):
  return _forward(x, scale, bias, mask, epsilon)[0]


def _forward(x, scale, bias, mask, epsilon):
  xc = x.astype(_compute_dtype(x))
  mean, var, count = _stats(xc, mask)
  rstd = jax.lax.rsqrt(var + epsilon)
  xhat = (xc - mean) * rstd
  return (xhat * scale + bias).astype(x.dtype), (xhat, rstd, count)


def _batch_norm_jvp(epsilon, primals, tangents):
  # Written as dy = dx * c + xhat * a + b with per-feature a, b, so that reverse mode transposes it into the closed
  # form (Ioffe & Szegedy's section 3) with one reduction each of the cotangent and of cotangent * xhat, shared by
  # the input's, the scale's and the bias's gradients.
  x, scale, bias, mask = primals
  dx, dscale, dbias, _ = tangents
  y, (xhat, rstd, count) = _forward(x, scale, bias, mask, epsilon)
  c = rstd * scale
  a = jnp.zeros_like(c) if isinstance(dscale, SymbolicZero) else dscale.astype(c.dtype)
  b = jnp.zeros_like(c) if isinstance(dbias, SymbolicZero) else dbias.astype(c.dtype)
  dy = xhat * a
  if not isinstance(dx, SymbolicZero):
    axes = tuple(range(x.ndim - 1))
    dxc = dx.astype(xhat.dtype)
    dm = dxc if mask is None else dxc * mask.astype(dxc.dtype)
    # d xhat = rstd (dx - mean(dx) - xhat mean(dx xhat)), both means over the entries the statistics come from.
    dy = dxc * c + xhat * (a - c * (jnp.sum(dm * xhat, axes) / count))
    b = b - c * (jnp.sum(dm, axes) / count)
  return y, (dy + b).astype(y.dtype)


_batch_norm.defjvp(_batch_norm_jvp, symbolic_zeros=True)


class BatchNorm(nn.Module):
  """Batch normalisation with the statistics of the batch it is called on (or of its masked part); no running
  averages. Params 'scale' and 'bias' `[features]`, as `flax.linen.BatchNorm`'s, so params of either load in the
  other; outputs equal `flax.linen.BatchNorm(use_running_average=False, use_fast_variance=False)`'s.

  Attributes:
    epsilon: added to the variance.
    dtype: the output dtype (default: the input's, promoted with the params').
    param_dtype: the params' dtype.
    use_scale, use_bias: whether to learn a scale and a bias.
    scale_init, bias_init: their initializers.
  """
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Callable[..., Array] = nn.initializers.ones_init()
  bias_init: Callable[..., Array] = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: Array, *, mask: Array | None = None) -> Array:
    """`x: [*batch, features]`; `mask`: booleans broadcastable to `x` selecting the entries of the statistics."""
    features = x.shape[-1]
    scale = (self.param('scale', self.scale_init, (features,), self.param_dtype) if self.use_scale
             else jnp.ones((features,), self.param_dtype))
    bias = (self.param('bias', self.bias_init, (features,), self.param_dtype) if self.use_bias
            else jnp.zeros((features,), self.param_dtype))
    dtype = self.dtype or jnp.result_type(x, scale, bias)
    return batch_norm(x.astype(dtype), scale.astype(dtype), bias.astype(dtype), mask, self.epsilon)
