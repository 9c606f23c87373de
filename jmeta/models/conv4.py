"""The four-block convolutional encoder of few-shot learning ("conv4"), a classifier on top, and pure functions.

Forms, for Omniglot's `[batch, 28, 28, 1]` inputs (NHWC):

- `conv4_maml`: 3x3 conv, 64 filters, stride 2, 'SAME', BatchNorm, ReLU; four times, then flatten:
  28 -> 14 -> 7 -> 4 -> 2, so 2 * 2 * 64 = 256 features (Finn et al., 2017, arXiv:1703.03400).
- `conv4_protonet`: the same block at stride 1 followed by a 2x2 max-pool: 28 -> 14 -> 7 -> 3 -> 1, 64 features
  (Snell et al., 2017, arXiv:1703.05175; Vinyals et al., 2016, arXiv:1606.04080).
- `conv4_relation`: feature maps, not flattened; the first two blocks are max-pooled and unpadded as in the
  Relation Network authors' code: 28 -> 13 -> 5 -> 5 -> 5, so `[batch, 5, 5, 64]` (Sung et al., 2018,
  arXiv:1711.06025).

BatchNorm and purity: `functional(module)` gives `init(key, example_x) -> params` and `apply(params, x)`. The params
pytree holds the weights only (Flax's 'params' collection); no running statistics are kept. `apply` normalises with
statistics computed when it is called, so it is pure, and one of two ways:

- `apply(params, x)`: statistics of the batch `x` itself. This is *transductive*: the output for one example
  depends on the other examples of `x`. MAML's reference code normalises this way in training and at test time,
  ProtoNets' and Relation Networks' code in training; it is what `jmeta.algorithms.maml(apply, ...)` gets.
- `apply(params, x, reference=support_x)`: statistics of `reference` only (the support set of the task), applied
  to every example of `x`. The output for one example of `x` then depends on that example and the support set,
  not on the rest of `x`: a non-transductive evaluation with task-specific statistics, in place of the running
  averages a stateful BatchNorm would keep. It runs the reference through the network alongside `x` (BatchNorm's
  `mask`), so it costs a forward pass of the reference too.

BatchNorm is `jmeta.nn.BatchNorm`: the outputs and params of `flax.linen.BatchNorm(use_running_average=False,
use_fast_variance=False)`, in one pass over the activations each way.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmeta import nn as jnn

Params = Any


class ConvBlock(nn.Module):
  """3x3 conv, BatchNorm (batch statistics), ReLU, optional 2x2 max-pool; `[batch, H, W, C] -> [batch, H', W', F]`.

  Attributes:
    features: number of filters.
    strides: stride of the convolution.
    padding: 'SAME' or 'VALID' for the convolution.
    pool: whether a 2x2, stride-2, unpadded max-pool ends the block.
    conv: the convolution module class, constructed as `conv(features, kernel_size, strides=, padding=, name=)`
      with the signature of `flax.linen.Conv`. The default, `jmeta.nn.Conv`, computes what `flax.linen.Conv`
      does with the same params, and is fast under `vmap` with per-task weights on XLA:CPU.
  """
  features: int = 64
  strides: int = 1
  padding: str = 'SAME'
  pool: bool = False
  conv: type = jnn.Conv
  kernel_size: int = 3

  @nn.compact
  def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
    """`mask: [batch]` selects the examples BatchNorm takes its statistics from (all when None)."""
    x = self.conv(self.features, (self.kernel_size, self.kernel_size), strides=(self.strides, self.strides),
                  padding=self.padding, name='conv')(x)
    if mask is not None:
      mask = jnp.reshape(mask, (-1,) + (1,) * (x.ndim - 1))
    x = jnn.BatchNorm(name='norm')(x, mask=mask)
    x = nn.relu(x)
    if self.pool:
      if min(x.shape[1:3]) < 2:
        raise ValueError(f'ConvBlock: cannot 2x2 max-pool a {x.shape[1]}x{x.shape[2]} feature map; '
                         'use larger inputs or fewer pooled blocks')
      x = jnn.max_pool(x, 2)
    return x


class Conv4(nn.Module):
  """Blocks of `ConvBlock`; `[batch, H, W, C] -> [batch, features]` (flattened) or `[batch, H', W', filters]`.

  The defaults are the MAML Omniglot form; see `conv4_maml`, `conv4_protonet` and `conv4_relation`.

  Attributes:
    filters: filters of every block.
    blocks: number of blocks.
    strides: stride of every convolution.
    pool_blocks: how many leading blocks end in a 2x2 max-pool.
    padding: convolution padding, one for all blocks or one per block.
    flatten: whether to flatten the final feature map.
    conv: the convolution module class (see `ConvBlock.conv`).
  """
  filters: int = 64
  blocks: int = 4
  strides: int = 2
  pool_blocks: int = 0
  padding: str | Sequence[str] = 'SAME'
  flatten: bool = True
  conv: type = jnn.Conv

  @nn.compact
  def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
    """`x: [batch, H, W, C]`; `mask: [batch]` selects the examples BatchNorm takes statistics from."""
    if x.ndim != 4:
      raise ValueError(f'Conv4 expects NHWC inputs [batch, height, width, channels]; got shape {x.shape}')
    paddings = (self.padding,) * self.blocks if isinstance(self.padding, str) else tuple(self.padding)
    if len(paddings) != self.blocks:
      raise ValueError(f'Conv4: {len(paddings)} paddings given for {self.blocks} blocks')
    for i, padding in enumerate(paddings):
      block = ConvBlock(self.filters, self.strides, padding, i < self.pool_blocks, self.conv, name=f'block{i}')
      x = block(x, mask=mask)
    return jnp.reshape(x, (x.shape[0], -1)) if self.flatten else x


def conv4_maml(filters: int = 64, blocks: int = 4, conv: type = jnn.Conv) -> Conv4:
  """MAML's Omniglot encoder: stride-2 convolutions, no pooling; 28x28 -> 256 features (Finn et al., 2017,
  arXiv:1703.03400)."""
  return Conv4(filters=filters, blocks=blocks, strides=2, pool_blocks=0, padding='SAME', flatten=True, conv=conv)


def conv4_protonet(filters: int = 64, blocks: int = 4, conv: type = jnn.Conv) -> Conv4:
  """ProtoNets' encoder: stride-1 convolutions, each block max-pooled; 28x28 -> 64 features (Snell et al., 2017,
  arXiv:1703.05175)."""
  return Conv4(filters=filters, blocks=blocks, strides=1, pool_blocks=blocks, padding='SAME', flatten=True, conv=conv)


def conv4_relation(filters: int = 64, blocks: int = 4, conv: type = jnn.Conv,
                   padding: str | Sequence[str] | None = None) -> Conv4:
  """Relation Networks' embedding module: unflattened feature maps, the first two blocks max-pooled; 28x28 ->
  `[5, 5, 64]` with the authors' padding, 'VALID' in the pooled blocks and 'SAME' after (Sung et al., 2018,
  arXiv:1711.06025). `padding='SAME'` gives `[7, 7, 64]`."""
  pooled = min(2, blocks)
  if padding is None:
    padding = ('VALID',) * pooled + ('SAME',) * (blocks - pooled)
  return Conv4(filters=filters, blocks=blocks, strides=1, pool_blocks=pooled, padding=padding, flatten=False,
               conv=conv)


class Classifier(nn.Module):
  """An encoder and a linear head; `[batch, *input_shape] -> [batch, ways]` logits.

  The parameters are `{'encoder': ..., 'head': {'kernel', 'bias'}}`, so ANIL can adapt the head alone through a
  mask that selects paths containing 'head'.

  Attributes:
    encoder: a module mapping `[batch, ...]` to `[batch, features]`, called with `mask=` as `Conv4` is.
    ways: number of classes.
  """
  encoder: nn.Module
  ways: int

  @nn.compact
  def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
    h = self.encoder(x, mask=mask)
    return nn.Dense(self.ways, name='head')(h)


class Functional(NamedTuple):
  """A module as pure functions.

  Attributes:
    init: `(key, example_x) -> params`, the weights (Flax's 'params' collection) for inputs shaped like
      `example_x: [batch, *input_shape]`.
    apply: `(params, x, *, reference=None) -> outputs` for `x: [batch, *input_shape]`. BatchNorm uses the
      statistics of `x` (transductive) or, given `reference: [examples, *input_shape]`, of `reference` alone
      (non-transductive for `x`).
  """
  init: Callable[[jax.Array, jax.Array], Params]
  apply: Callable[..., jax.Array]


def functional(module: nn.Module) -> Functional:
  """`init` and `apply` for `module`, whose `__call__(x, *, mask=None)` forwards `mask: [batch]` to its BatchNorms.

  A module without BatchNorm needs `mask` only if `apply` is called with `reference`. See the module docstring for
  the two ways of normalising.
  """

  @jax.jit  # one program, not one per initializer and shape when called eagerly
  def init(key: jax.Array, example_x: jax.Array) -> Params:
    return module.init(key, example_x)['params']

  def apply(params: Params, x: jax.Array, *, reference: jax.Array | None = None) -> jax.Array:
    if reference is None:
      return module.apply({'params': params}, x, mutable=['batch_stats'])[0]
    if jnp.shape(reference)[1:] != jnp.shape(x)[1:]:
      raise ValueError(f'apply: reference examples have shape {jnp.shape(reference)[1:]} but x has '
                       f'{jnp.shape(x)[1:]}; they must match')
    n = jnp.shape(reference)[0]
    both = jnp.concatenate([reference, x], axis=0)
    mask = jnp.arange(both.shape[0]) < n
    return module.apply({'params': params}, both, mask=mask, mutable=['batch_stats'])[0][n:]

  return Functional(init, apply)
