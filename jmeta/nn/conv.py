"""A drop-in for `flax.linen.Conv` that is fast on XLA's CPU backend, and under `vmap` with per-task weights.

`jax.vmap` of a convolution whose kernel is batched (MAML's fast weights: one kernel per task) becomes one
grouped convolution (`feature_group_count = tasks`), which XLA:CPU runs 40-60x slower than the same work as
ordinary convolutions. `conv` computes the convolution instead as patch extraction (strided slices of the padded
input, one per kernel offset) followed by one matmul with the reshaped kernel, so the task axis of a `vmap`
becomes a batch dimension of a batched matmul. Which form XLA:CPU runs fastest, and by how much, is measured in
`benchmarks/conv_variants.py` (notes in `benchmarks/notes/conv_variants.md`).

Where one kernel serves the whole batch (metric learners' encoders: no per-task weights), `impl='shared'` is
faster on XLA:CPU: `lax.conv_general_dilated` forward and for the input's gradient, where XLA's convolutions are
fast, and an im2col matmul for the kernel's gradient, where they are slow (`'xla_im2col_grad'`, a `jax.custom_jvp`,
so forward and reverse mode and their compositions all work). Under `vmap` with per-task kernels it is correct but
XLA's grouped convolution again, so `'auto'` keeps the patches. On GPU and TPU both keep
`lax.conv_general_dilated`: cuDNN's and the TPU's convolutions are good there.
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

IMPLS = ('auto', 'shared', 'im2col', 'xla', 'xla_im2col_grad')
SMALL_CIN = 4
"""Inputs with at most this many channels (a network's first layer) take the channel-major patch layout."""
CHUNK_BYTES = 4 << 20
"""The kernel gradient of 'xla_im2col_grad' builds its patches for chunks of about this many bytes (cache-sized)."""


def resolve_impl(impl: str = 'auto') -> str:
  """On the CPU backend 'im2col' for `impl='auto'` and 'xla_im2col_grad' for 'shared'; 'xla' for both elsewhere;
  else `impl` itself (checked)."""
  if impl not in IMPLS:
    raise ValueError(f'conv: impl must be one of {IMPLS}, got {impl!r}')
  cpu = jax.default_backend() == 'cpu'
  if impl == 'auto':
    return 'im2col' if cpu else 'xla'
  if impl == 'shared':
    return 'xla_im2col_grad' if cpu else 'xla'
  return impl


def conv(x: Array, kernel: Array, strides: int | Sequence[int] = 1, padding: PaddingLike = 'SAME', *,
         impl: str = 'auto', precision: Any = None) -> Array:
  """Cross-correlation of channels-last inputs with an HWIO kernel, as `flax.linen.Conv` computes it (no bias).

  Args:
    x: `[*batch, *spatial, in_features]`, any number (zero or more) of leading batch dimensions.
    kernel: `[*window, in_features, out_features]`, as `flax.linen.Conv`'s 'kernel' parameter.
    strides: an int or one per spatial dimension.
    padding: 'SAME', 'VALID', an int, or per spatial dimension an int or a `(low, high)` pair (as Flax).
    impl: 'im2col' (patches and a matmul), 'xla' (`lax.conv_general_dilated`), 'xla_im2col_grad' (XLA's
      convolution, with the kernel's gradient as an im2col matmul), or 'auto' ('im2col' when
      `jax.default_backend()` is 'cpu', else 'xla') or 'shared' (for a kernel shared by the batch:
      'xla_im2col_grad' on the CPU, else 'xla').
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
  impl = resolve_impl(impl)
  if impl == 'xla':
    return _conv_xla(x, kernel, strides, pads, precision)
  if impl == 'xla_im2col_grad':
    return _conv_xla_im2col_grad(x, kernel, strides, pads, precision)
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
    impl: 'auto' (patches and a matmul on the CPU backend, `lax.conv_general_dilated` on GPU/TPU), 'shared'
      (faster where the kernel is not per-task under `vmap`), or 'im2col', 'xla', 'xla_im2col_grad' to force one
      (see `conv`).
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


class SharedConv(Conv):
  """`Conv` with `impl='shared'`: for a kernel that one call applies to its whole batch (an encoder whose weights no
  `vmap` makes per-task, as in metric learners). Same params and outputs as `Conv` and `flax.linen.Conv`."""
  impl: str = 'shared'


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
  spec = ''.join('HWDEFGIJ'[:n])
  dn = lax.conv_dimension_numbers(xb.shape, kernel.shape, (f'N{spec}C', f'{spec}IO', f'N{spec}C'))
  y = lax.conv_general_dilated(xb, kernel, strides, pads, dimension_numbers=dn, precision=precision)
  return y.reshape(batch + y.shape[1:])


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


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _conv_xla_im2col_grad(x, kernel, strides, pads, precision):
  return _conv_xla(x, kernel, strides, pads, precision)


def _conv_xla_im2col_grad_jvp(strides, pads, precision, primals, tangents):
  # Linear in the tangents: reverse mode transposes the input's term into XLA's input-gradient convolution and
  # the kernel's term into `_kernel_tangent`'s chunked `patches @ cotangent`.
  x, kernel = primals
  dx, dkernel = tangents
  y = _conv_xla(x, kernel, strides, pads, precision)
  terms = []
  if not isinstance(dx, SymbolicZero):
    terms.append(_conv_xla(dx, kernel, strides, pads, precision))
  if not isinstance(dkernel, SymbolicZero):
    terms.append(_kernel_tangent(x, dkernel, strides, pads, precision))
  return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


_conv_xla_im2col_grad.defjvp(_conv_xla_im2col_grad_jvp, symbolic_zeros=True)


def _kernel_tangent(x, dkernel, strides, pads, precision):
  """`conv(x, dkernel)` as channel-major patches `[k, m]` contracted with `dkernel` `[k, cout]` over `k`.

  Its transpose, the kernel's gradient, is then `patches @ cotangent` (`[k, m] x [m, cout]`), the matmul layout
  XLA:CPU runs fastest (the `[m, k]` patches' transposed product ran at half the rate). Images go in chunks of
  about `CHUNK_BYTES` of patches through a `lax.scan` whose body is rematerialised, so each chunk's patches are
  built, used and dropped while in cache, in the forward and the transposed scan alike.
  """
  n = dkernel.ndim - 2
  window, (cin, cout) = dkernel.shape[:n], dkernel.shape[n:]
  batch, spatial = x.shape[:x.ndim - n - 1], x.shape[x.ndim - n - 1:-1]
  images = int(np.prod(batch))
  k = int(np.prod(window)) * cin
  out = [max(0, (s + lo + hi - w) // st + 1) for s, (lo, hi), w, st in zip(spatial, pads, window, strides)]
  per_image = k * int(np.prod(out)) * x.dtype.itemsize
  target = max(1, min(images, CHUNK_BYTES // max(per_image, 1)))
  size = max(d for d in range(1, target + 1) if images % d == 0)  # a divisor of the images: no padded copies
  w = dkernel.reshape(k, cout)

  @functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.nothing_saveable)
  def chunk(_, xc):
    views, _ = _shifted_views(jnp.moveaxis(xc, -1, 0), window, strides, pads, 2)  # xc: [cin, size, *spatial]
    p = jnp.stack(views, 0).reshape(k, -1)
    return None, lax.dot_general(p, w, (((0,), (0,)), ((), ())), precision=precision)

  xs = x.reshape((images // size, size) + tuple(spatial) + (cin,))
  _, ys = lax.scan(chunk, None, xs)
  return ys.reshape(batch + tuple(out) + (cout,))
