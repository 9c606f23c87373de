"""Non-overlapping max-pooling as a reshape and a reduction, faster on XLA:CPU than `reduce_window`."""

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
  training step here; a reshape to `[..., s // w, w, ...]` and a max over the window axes does the same in a
  fraction of it (`benchmarks/notes/conv_variants.md`). Gradients differ only on exact ties between positive
  values inside a window, where this splits the gradient evenly instead of picking one.
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
  axes = tuple(lead + 2 * d + 1 for d in range(n))
  return jnp.max(jnp.reshape(x, split), axis=axes)
