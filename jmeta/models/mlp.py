"""A multilayer perceptron, the sinusoid regressor of the MAML paper."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
  """Dense layers with `activation` between them: `x: [batch, in] -> [batch, out]`.

  The hidden layers are named `hidden_{i}` and the last `head`, so `jmeta.path_mask('head')` selects it.
  """
  hidden: Sequence[int] = (40, 40)
  out: int = 1
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.hidden):
      x = self.activation(nn.Dense(width, name=f'hidden_{i}')(x))
    return nn.Dense(self.out, name='head')(x)
