"""Non-overlapping max-pooling as a reshape and a selection, faster on XLA:CPU than `reduce_window`."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def max_pool(x: jax.Array, window: int | Sequence[int] = 2) -> jax.Array:
  """Max over non-overlapping windows (stride = window, 'VALID'), as `flax.linen.max_pool(x, window, window)`.

  Args:
    x: `[*batch, *spatial, features]`, channels last, one spatial dimension per entry of `window`.
    window: an int (2-D) or one size per spatial dimension.

  Returns:
    `[*batch, *(s // w for s, w), features]`; trailing rows and columns that fill no window are dropped.

  XLA:CPU's `reduce_window` max, and above all its gradient (`select_and_scatter`), took about 30% of a ProtoNets
  training step here; a reshape to `[..., s // w, w, ...]` and a reduction over the window axes does the same in a
  fraction of it (`benchmarks/notes/conv_variants.md`).

  Each window axis is reduced by selecting the element at its `argmax`, not by `jnp.max`: the derivative of
  `jnp.max` finds the maximum again by comparing the input with the output for equality, and under `jit` XLA may
  compute the two from separately fused copies of the input, so the comparison can miss. That lost part of MAML's
  second-order meta-gradient through pooled conv4 (`benchmarks/second_order_check.py`, 16x16: -0.0872 against a
  converged finite difference of -0.0850). A selection by index is linear in `x` whatever XLA fuses. On ties the
  first element of the window wins, as in `reduce_window` and PyTorch.
  """
  window = (window, window) if isinstance(window, int) else tuple(window)
  n = len(window)
  if x.ndim < n + 1:
    raise ValueError(f'max_pool: a {n}-D window needs inputs [*batch, {n} spatial dims, features], got {x.shape}')
  lead = x.ndim - n - 1
  spatial = x.shape[lead:-1]
  if any(s < w for s, w in zip(spatial, window)):
    raise ValueError(f'max_pool: cannot pool a {"x".join(map(str, spatial))} feature map with a '
                     f'{"x".join(map(str, window))} window')
  out = [s // w for s, w in zip(spatial, window)]
  x = x[(slice(None),) * lead + tuple(slice(0, o * w) for o, w in zip(out, window))]
  split = x.shape[:lead] + sum(((o, w) for o, w in zip(out, window)), ()) + x.shape[-1:]
  x = jnp.reshape(x, split)
  for d in reversed(range(n)):  # last window axis first, so the earlier axes keep their positions
    x = _select_max(x, lead + 2 * d + 1)
  return x


def _select_max(x: jax.Array, axis: int) -> jax.Array:
  """`x` reduced over `axis` by taking the element at the argmax (the first on ties, NaN if any is NaN)."""
  index = jax.lax.stop_gradient(jnp.argmax(x, axis=axis, keepdims=True))
  chosen = jax.lax.broadcasted_iota(index.dtype, x.shape, axis) == index
  return jnp.sum(jnp.where(chosen, x, jnp.zeros((), x.dtype)), axis=axis)
