"""ResNet-12, the encoder of MetaOptNet and learn2learn's mini-ImageNet, CIFAR-FS and FC100 benchmarks.

Four residual blocks of (64, 160, 320, 640) filters. Each block is three 3x3 convolutions (no bias), each followed
by BatchNorm and LeakyReLU(0.1) (none after the third before the sum), plus a 1x1 convolution and BatchNorm on the
shortcut; the sum goes through LeakyReLU(0.1) and a 2x2 max-pool. 84x84 -> 42 -> 21 -> 10 -> 5, then the mean over
the 5x5 map (learn2learn's `AvgPool2d(5)`) gives 640 features; 32x32 -> 2x2 -> 640 the same way. The layout follows
learn2learn's `ResNet12` (learn2learn/vision/models/resnet12.py, adapted from Lee et al., 2019, arXiv:1904.03758,
github.com/kjunelee/MetaOptNet; the network of Mishra et al., 2018, arXiv:1707.03141): 12,424,320 parameters without
the classifier. Not included: DropBlock and dropout (learn2learn's `drop_rate=0.1`), which need a key per call.

BatchNorm uses batch statistics, as `jmeta.models.conv4` does: `conv4.functional(resnet12())` gives the pure
`init` and `apply(params, x, reference=None)`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmeta import nn as jnn

WIDTHS = (64, 160, 320, 640)
"""Filters of the four blocks (Lee et al., 2019; learn2learn's ResNet12)."""


class ResidualBlock(nn.Module):
  """Three 3x3 conv + BatchNorm, a 1x1 conv + BatchNorm shortcut, LeakyReLU, 2x2 max-pool;
  `[batch, H, W, C] -> [batch, H // 2, W // 2, features]`."""
  features: int
  slope: float = 0.1
  conv: type = jnn.Conv

  @nn.compact
  def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
    if mask is not None:
      mask = jnp.reshape(mask, (-1, 1, 1, 1))

    def norm(h, name):
      return jnn.BatchNorm(name=name)(h, mask=mask)

    h = x
    for i in range(3):
      h = norm(self.conv(self.features, (3, 3), padding='SAME', use_bias=False, name=f'conv{i}')(h), f'norm{i}')
      if i < 2:
        h = nn.leaky_relu(h, self.slope)
    shortcut = norm(self.conv(self.features, (1, 1), padding='SAME', use_bias=False, name='shortcut')(x),
                    'shortcut_norm')
    h = nn.leaky_relu(h + shortcut, self.slope)
    if min(h.shape[1:3]) < 2:
      raise ValueError(f'ResNet12: cannot 2x2 max-pool a {h.shape[1]}x{h.shape[2]} feature map; inputs must be at '
                       'least 16x16')
    return jnn.max_pool(h, 2)


class ResNet12(nn.Module):
  """`[batch, H, W, C] -> [batch, widths[-1]]` (mean over the final map) or the map itself (`pool=False`).

  Attributes:
    widths: filters of each block.
    pool: average the final feature map over space (learn2learn's `avg_pool=True`).
    conv: the convolution class (see `jmeta.models.conv4.ConvBlock.conv`).
  """
  widths: Sequence[int] = WIDTHS
  pool: bool = True
  conv: type = jnn.Conv

  @nn.compact
  def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f'ResNet12 expects NHWC inputs [batch, height, width, channels]; got shape {x.shape}')
    for i, width in enumerate(self.widths):
      x = ResidualBlock(width, conv=self.conv, name=f'block{i}')(x, mask=mask)
    if self.pool:
      return jnp.mean(x, axis=(1, 2))
    return jnp.reshape(x, (x.shape[0], -1))


def resnet12(widths: Sequence[int] = WIDTHS, pool: bool = True, conv: type = jnn.Conv) -> ResNet12:
  """ResNet-12 of Lee et al. (2019, arXiv:1904.03758) as learn2learn builds it; 84x84x3 -> 640 features."""
  return ResNet12(widths=tuple(widths), pool=pool, conv=conv)
