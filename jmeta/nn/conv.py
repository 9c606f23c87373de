"""A drop-in for `flax.linen.Conv` that is fast on XLA's CPU backend, and under `vmap` with per-task weights.

`jax.vmap` of a convolution whose kernel is batched (MAML's fast weights: one kernel per task) becomes one
grouped convolution (`feature_group_count = tasks`), which XLA:CPU runs 40-60x slower than the same work as
ordinary convolutions. `conv` computes the convolution instead as patch extraction (strided slices of the padded
input, one per kernel offset) followed by one matmul with the reshaped kernel, so the task axis of a `vmap`
becomes a batch dimension of a batched matmul. Which form XLA:CPU runs fastest, and by how much, is measured in
`benchmarks/conv_variants.py` (notes in `benchmarks/notes/conv_variants.md`).

On XLA:CPU the patches also make a plain (non-vmapped) training step as fast or slightly faster, but a forward
pass alone without per-task weights about 1.7x slower than `lax.conv_general_dilated`: pass `impl='xla'` for
evaluation-only passes. On GPU and TPU the default keeps `lax.conv_general_dilated`: cuDNN's and the TPU's
convolutions are good there.

`impl='xla'` on the CPU backend differentiates `lax.conv_general_dilated` so that its gradients are convolutions in
XLA:CPU's canonical layout: JAX's own are not, and XLA makes them canonical only outside loops, so inside a
`lax.scan` (an inner loop, `jmeta.fit`'s steps) `flax.linen.Conv`'s gradients ran 20-35x slower here. Second
derivatives (MAML's second-order meta-gradient through an inner loop) still take JAX's rules, and stay slow in loops.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from flax.linen.linear import canonicalize_padding, default_kernel_init
from jax import lax
from jax.custom_derivatives import SymbolicZero

Array = jax.Array
PaddingLike = str | int | Sequence[int | tuple[int, int]]

IMPLS = ('auto', 'im2col', 'xla')
SMALL_CIN = 4
"""Inputs with at most this many channels (a network's first layer) take the channel-major patch layout."""


def resolve_impl(impl: str = 'auto') -> str:
  """'im2col' on the CPU backend and 'xla' elsewhere for `impl='auto'`; else `impl` itself (checked)."""
  if impl not in IMPLS:
    raise ValueError(f'conv: impl must be one of {IMPLS}, got {impl!r}')
  if impl == 'auto':
    return 'im2col' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def conv(x: Array, kernel: Array, strides: int | Sequence[int] = 1, padding: PaddingLike = 'SAME', *,
         impl: str = 'auto', precision: Any = None) -> Array:
  """Cross-correlation of channels-last inputs with an HWIO kernel, as `flax.linen.Conv` computes it (no bias).

  Args:
    x: `[*batch, *spatial, in_features]`, any number (zero or more) of leading batch dimensions.
    kernel: `[*window, in_features, out_features]`, as `flax.linen.Conv`'s 'kernel' parameter.
    strides: an int or one per spatial dimension.
    padding: 'SAME', 'VALID', an int, or per spatial dimension an int or a `(low, high)` pair (as Flax).
    impl: 'im2col' (patches and a matmul), 'xla' (`lax.conv_general_dilated`), or 'auto': 'im2col' when
      `jax.default_backend()` is 'cpu', else 'xla'.
    precision: passed to the matmul or the convolution.

  Returns:
    `[*batch, *out_spatial, out_features]`.
  """
  n = kernel.ndim - 2
  if n < 1 or x.ndim < n + 1:
    raise ValueError(f'conv: kernel {kernel.shape} needs inputs [*batch, {n} spatial dims, features], got {x.shape}')
  if x.shape[-1] != kernel.shape[-2]:
    raise ValueError(f'conv: input features {x.shape[-1]} != kernel input features {kernel.shape[-2]}')
  strides = (strides,) * n if isinstance(strides, int) else tuple(strides)
  pads = _explicit_pads(padding, x.shape[x.ndim - n - 1:-1], kernel.shape[:n], strides)
  if resolve_impl(impl) == 'xla':
    return _conv_xla(x, kernel, strides, pads, precision)
  return _conv_im2col(x, kernel, strides, pads, precision)


class Conv(nn.Module):
  """`flax.linen.Conv` (shared weights, no groups or dilation) computed by `conv`; same params, same outputs.

  Params: 'kernel' `[*kernel_size, in_features, features]` and 'bias' `[features]`, so a pytree of
  `flax.linen.Conv` params applies unchanged. Inputs `[*batch, *spatial, in_features]` (channels last, any number of
  batch dimensions) give `[*batch, *out_spatial, features]`.

  Attributes:
    features: number of filters.
    kernel_size: window shape; an int is a 1-D window, as in Flax.
    strides: an int or one per spatial dimension.
    padding: 'SAME', 'VALID', 'CIRCULAR', 'REFLECT', 'CAUSAL' (1-D), an int, or per spatial dimension an int or
      a `(low, high)` pair.
    use_bias: whether to add a bias.
    dtype: the computation dtype (default: promoted from inputs and params).
    param_dtype: the dtype of the params.
    precision: the matmul's or convolution's precision.
    kernel_init: initializer of the kernel.
    bias_init: initializer of the bias.
    impl: 'auto' (patches and a matmul on the CPU backend, `lax.conv_general_dilated` on GPU/TPU), 'im2col' or
      'xla' to force one.
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = 1
  padding: PaddingLike = 'SAME'
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable[..., Array] = default_kernel_init
  bias_init: Callable[..., Array] = nn.initializers.zeros_init()
  impl: str = 'auto'

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    """`inputs: [*batch, *spatial, in_features]` -> `[*batch, *out_spatial, features]`."""
    kernel_size = (self.kernel_size,) if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
    n = len(kernel_size)
    padding = canonicalize_padding(self.padding, n)
    if padding in ('CIRCULAR', 'REFLECT', 'CAUSAL'):
      inputs, padding = _pad_mode(inputs, kernel_size, padding)
    kernel = self.param('kernel', self.kernel_init, kernel_size + (inputs.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param('bias', self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = conv(inputs, kernel, self.strides, padding, impl=self.impl, precision=self.precision)
    if bias is not None:
      y = y + bias
    return y


def _pad_mode(x, kernel_size, mode):
  n = len(kernel_size)
  if mode == 'CAUSAL':
    if n != 1:
      raise ValueError('Causal padding is only implemented for 1D convolutions.')
    pads = [(kernel_size[0] - 1, 0)]
    return jnp.pad(x, [(0, 0)] * (x.ndim - 2) + pads + [(0, 0)]), 'VALID'
  pads = [((k - 1) // 2, k // 2) for k in kernel_size]
  x = jnp.pad(x, [(0, 0)] * (x.ndim - n - 1) + pads + [(0, 0)], mode={'CIRCULAR': 'wrap', 'REFLECT': 'reflect'}[mode])
  return x, 'VALID'


def _explicit_pads(padding, spatial, window, strides):
  if isinstance(padding, str):
    return tuple(tuple(p) for p in lax.padtype_to_pads(spatial, window, strides, padding))
  pads = canonicalize_padding(padding, len(window))
  return tuple((int(lo), int(hi)) for lo, hi in pads)


def _conv_xla(x, kernel, strides, pads, precision):
  n = kernel.ndim - 2
  batch = x.shape[:x.ndim - n - 1]
  xb = x.reshape((int(np.prod(batch)),) + x.shape[len(batch):])
  if jax.default_backend() == 'cpu':
    y = _canonical_conv(xb, kernel, tuple(strides), tuple(pads), precision)
  else:
    y = _channels_last_conv(xb, kernel, strides, pads, precision)
  return y.reshape(batch + y.shape[1:])


def _channels_last_conv(x, kernel, strides, pads, precision):
  """`lax.conv_general_dilated` of `x: [batch, *spatial, in]` and `kernel: [*window, in, out]`."""
  n = kernel.ndim - 2
  spec = ''.join('HWDEFGIJ'[:n])
  dn = lax.conv_dimension_numbers(x.shape, kernel.shape, (f'N{spec}C', f'{spec}IO', f'N{spec}C'))
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=dn, precision=precision)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _canonical_conv(x, kernel, strides, pads, precision):
  """`_channels_last_conv`, differentiated so that reverse mode's convolutions are channels-last too.

  XLA:CPU runs a convolution with Eigen or YNNPACK only if it is "canonical" (input `[batch, *spatial, in]`, kernel
  `[*window, in, out]`, output `[batch, *spatial, out]`), and makes the others canonical by transposing their
  operands only in the entry computation (`ConvCanonicalization`). A convolution in the body of a `lax.scan`,
  `lax.map`, `lax.while_loop` or `lax.cond` that is not canonical runs in a naive loop instead. JAX's own
  transposes of a channels-last convolution are not canonical (the kernel's gradient contracts over the batch; the
  input's uses the kernel with in and out swapped), so every gradient step of an inner loop or of a training
  `lax.scan` paid 20-35x for it here (`benchmarks/scan_conv.py`). The tangent below computes the same values
  with its operands transposed so that its transposes, the gradients, are canonical convolutions.
  """
  return _channels_last_conv(x, kernel, strides, pads, precision)


def _canonical_conv_jvp(strides, pads, precision, primals, tangents):
  x, kernel = primals
  dx, dkernel = tangents
  n = kernel.ndim - 2
  spatial = tuple(range(1, n + 1))
  y = _channels_last_conv(x, kernel, strides, pads, precision)
  terms = []
  if not isinstance(dx, SymbolicZero):
    # The kernel stored as [*window, out, in]: the input's gradient, which uses the kernel with in and out swapped,
    # then finds it stored as [*window, in, out] of its own roles.
    swapped = jnp.swapaxes(kernel, n, n + 1)
    dn = lax.ConvDimensionNumbers((0, n + 1) + spatial, (n, n + 1) + tuple(range(n)), (0, n + 1) + spatial)
    terms.append(lax.conv_general_dilated(dx, swapped, strides, pads, dimension_numbers=dn, precision=precision))
  if not isinstance(dkernel, SymbolicZero):
    # The input as [in, *spatial, batch] and the kernel as [in, *window, out], the output as [*spatial, batch,
    # out]: the kernel's gradient then convolves [in, *spatial, batch] with [*spatial, batch, out] into
    # [in, *window, out], a canonical convolution with `in` as its batch and `batch` as its features.
    xt = jnp.transpose(x, (n + 1,) + spatial + (0,))
    kt = jnp.transpose(dkernel, (n,) + tuple(range(n)) + (n + 1,))
    dn = lax.ConvDimensionNumbers((n + 1, 0) + spatial, (n + 1, 0) + spatial, (n, n + 1) + tuple(range(n)))
    z = lax.conv_general_dilated(xt, kt, strides, pads, dimension_numbers=dn, precision=precision)
    terms.append(jnp.transpose(z, (n,) + tuple(range(n)) + (n + 1,)))
  return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


_canonical_conv.defjvp(_canonical_conv_jvp, symbolic_zeros=True)


def _shifted_views(x, window, strides, pads, lead):
  """The padded input's strided slice at each kernel offset: `prod(window)` arrays `[..., *out_spatial, ...]`.

  `x` has the spatial dimensions at `lead, ..., lead + len(window) - 1`.
  """
  n = len(window)
  cfg = [(0, 0, 0)] * x.ndim
  for d, (lo, hi) in enumerate(pads):
    cfg[lead + d] = (lo, hi, 0)
  x = lax.pad(x, jnp.zeros((), x.dtype), cfg)
  out = [max(0, (x.shape[lead + d] - window[d]) // strides[d] + 1) for d in range(n)]
  step = [1] * x.ndim
  step[lead:lead + n] = strides
  views = []
  for offset in itertools.product(*map(range, window)):
    start, limit = [0] * x.ndim, list(x.shape)
    for d in range(n):
      start[lead + d] = offset[d]
      limit[lead + d] = offset[d] + (out[d] - 1) * strides[d] + 1 if out[d] else offset[d]
    views.append(lax.slice(x, start, limit, step))
  return views, out


def _conv_im2col(x, kernel, strides, pads, precision):
  n = kernel.ndim - 2
  window, (cin, cout) = kernel.shape[:n], kernel.shape[n:]
  batch = x.shape[:x.ndim - n - 1]
  k = int(np.prod(window)) * cin
  w = kernel.reshape(k, cout)
  if cin <= SMALL_CIN:
    # Channel-major patches [k, M]: for few input channels the transpose is (nearly) free, the patches are k
    # contiguous rows, and the kernel's gradient is a plain [k, M] x [M, cout] matmul.
    views, out = _shifted_views(jnp.moveaxis(x, -1, 0), window, strides, pads, 1 + len(batch))
    p = jnp.stack(views, 0).reshape(k, -1)
    y = lax.dot_general(p, w, (((0,), (0,)), ((), ())), precision=precision)
  else:
    # Channel-minor patches [M, k]: the kh*kw views concatenated along the features.
    views, out = _shifted_views(x, window, strides, pads, len(batch))
    p = jnp.concatenate(views, axis=-1).reshape(-1, k)
    y = lax.dot_general(p, w, (((1,), (0,)), ((), ())), precision=precision)
  return y.reshape(batch + tuple(out) + (cout,))
