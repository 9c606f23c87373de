"""The networks of conditional, latent and attentive neural processes, as the DeepMind notebooks build them.

Garnelo et al. (2018, arXiv:1807.01613; 2018, arXiv:1807.01622) and Kim et al. (2019, arXiv:1901.05761). One module
covers the three: a deterministic path (MLP of each `(x, y)`, then a mean, or multi-head cross-attention from the
targets' `x` to the context's), an optional latent path (MLP, mean, a Gaussian over `z`) and a decoder of
`(r, z, x)` to a Gaussian per target. Sets are masked (`mask: [points]` bool): padded points change nothing.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmeta.models.mlp import MLP


def masked_set_mean(h: jax.Array, mask: jax.Array) -> jax.Array:
  """The mean of the rows of `h: [points, dim]` where `mask: [points]` is True, `[dim]`; zeros if none is."""
  count = jnp.maximum(jnp.sum(mask), 1).astype(h.dtype)
  return jnp.sum(jnp.where(mask[:, None], h, 0), axis=0) / count


class MultiheadAttention(nn.Module):
  """Multi-head dot-product attention from queries to a masked set (Vaswani et al., 2017, arXiv:1706.03762), as
  the attentive NP notebook writes it: per-head projections without biases, each head's output projected back to
  the values' width and summed."""
  heads: int = 8

  @nn.compact
  def __call__(self, queries: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array) -> jax.Array:
    """`queries: [m, dk]`, `keys: [n, dk]`, `values: [n, dv]`, `mask: [n]` bool -> `[m, dv]`.

    Padded points get a weight of exactly 0; with no real point the output is 0.
    """
    dk, dv = queries.shape[-1], values.shape[-1]
    if dv % self.heads:
      raise ValueError(f'MultiheadAttention: the values\' width {dv} must be a multiple of heads={self.heads}')
    size = dv // self.heads
    key_init, out_init = nn.initializers.normal(dk ** -0.5), nn.initializers.normal(dv ** -0.5)
    wq = self.param('query', key_init, (self.heads, dk, size))
    wk = self.param('key', key_init, (self.heads, dk, size))
    wv = self.param('value', key_init, (self.heads, dv, size))
    wo = self.param('out', out_init, (self.heads, size, dv))
    q = jnp.einsum('md,hds->hms', queries, wq)
    k = jnp.einsum('nd,hds->hns', keys, wk)
    v = jnp.einsum('nd,hds->hns', jnp.where(mask[:, None], values, 0), wv)
    logits = jnp.einsum('hms,hns->hmn', q, k) / jnp.sqrt(jnp.asarray(size, q.dtype))
    # A finite floor rather than -inf: with no real point the weights are uniform over zeroed values, not NaN.
    weights = jax.nn.softmax(jnp.where(mask, logits, jnp.finfo(logits.dtype).min), axis=-1)
    return jnp.einsum('hmn,hns,hsd->md', weights, v, wo)


class SelfAttention(nn.Module):
  """One layer of masked multi-head self-attention over a set with a residual connection and layer normalisation
  (the "stacked multihead" encoders of Kim et al., 2019)."""
  heads: int = 8

  @nn.compact
  def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
    """`h: [points, dim]`, `mask: [points]` -> `[points, dim]`; real points attend to real points only."""
    return nn.LayerNorm()(h + MultiheadAttention(self.heads)(h, h, h, mask))


class Encoding(NamedTuple):
  """The deterministic path's encoding of a context set.

  Attributes:
    values: `[dim]`, the mean representation (CNP, NP), or `[points, dim]`, one per context point (ANP).
    keys: `[points, dim]`, the context inputs' representation that target queries attend to (ANP), else None.
    mask: `[points]` bool, the real context points (ANP), else None.
  """
  values: jax.Array
  keys: jax.Array | None = None
  mask: jax.Array | None = None


class NeuralProcess(nn.Module):
  """A conditional, latent or attentive neural process.

  CNP: `latent_dim=None`; NP: `latent_dim=128` (with the deterministic path, as the attentive NP notebook's NP,
  or without it, `deterministic_path=False`, as Garnelo et al.'s NP); ANP: `latent_dim=128, attention=True`.
  The defaults are the notebooks': MLPs of width 128, 4 encoder layers, a decoder of 2 hidden layers, standard
  deviations `min_std + (1 - min_std) * softplus(raw)` with `min_std = 0.1`, latent scales
  `0.1 + 0.9 * sigmoid(raw)`, 8 heads whose queries and keys are an MLP [128, 128] of `x`.

  Methods (call them through `apply(..., method=...)`; `__call__` runs all of them, for `init`):
    `encode(x, y, mask) -> Encoding`: the deterministic path on a context set.
    `latent(x, y, mask) -> (loc, scale)`: the latent Gaussian `[latent_dim]` of a set.
    `decode(encoding, z, x) -> [targets, 2 * y_dim]`: means then standard deviations at `x: [targets, x_dim]`.
  """
  x_dim: int = 1
  y_dim: int = 1
  hidden: int = 128
  encoder_layers: int = 4
  decoder_layers: int = 2
  latent_dim: int | None = None
  deterministic_path: bool = True
  attention: bool = False
  heads: int = 8
  self_attention: int = 0
  min_std: float = 0.1

  def setup(self):
    h = self.hidden
    if not self.deterministic_path and not self.latent_dim:
      raise ValueError('NeuralProcess needs a deterministic path or a latent one (latent_dim)')
    if self.deterministic_path:
      self.encoder = MLP(hidden=(h,) * (self.encoder_layers - 1), out=h)
      self.encoder_attention = [SelfAttention(self.heads) for _ in range(self.self_attention)]
      if self.attention:
        self.input_rep = MLP(hidden=(h,), out=h)
        self.cross_attention = MultiheadAttention(self.heads)
    if self.latent_dim:
      self.latent_encoder = MLP(hidden=(h,) * (self.encoder_layers - 1), out=h)
      self.latent_attention = [SelfAttention(self.heads) for _ in range(self.self_attention)]
      self.latent_hidden = nn.Dense((h + self.latent_dim) // 2)
      self.latent_loc = nn.Dense(self.latent_dim)
      self.latent_scale = nn.Dense(self.latent_dim)
    self.decoder = MLP(hidden=(h,) * self.decoder_layers, out=2 * self.y_dim)

  def encode(self, x: jax.Array, y: jax.Array, mask: jax.Array) -> Encoding:
    h = self.encoder(jnp.concatenate([x, y], axis=-1))
    for layer in self.encoder_attention:
      h = layer(h, mask)
    if self.attention:
      return Encoding(h, self.input_rep(x), mask)
    return Encoding(masked_set_mean(h, mask))

  def latent(self, x: jax.Array, y: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = self.latent_encoder(jnp.concatenate([x, y], axis=-1))
    for layer in self.latent_attention:
      h = layer(h, mask)
    h = nn.relu(self.latent_hidden(masked_set_mean(h, mask)))
    return self.latent_loc(h), 0.1 + 0.9 * nn.sigmoid(self.latent_scale(h))

  def decode(self, encoding: Encoding | None, z: jax.Array | None, x: jax.Array) -> jax.Array:
    parts = []
    if self.deterministic_path:
      if self.attention:
        parts.append(self.cross_attention(self.input_rep(x), encoding.keys, encoding.values, encoding.mask))
      else:
        parts.append(jnp.broadcast_to(encoding.values, (x.shape[0], encoding.values.shape[-1])))
    if self.latent_dim:
      parts.append(jnp.broadcast_to(z, (x.shape[0], z.shape[-1])))
    raw = self.decoder(jnp.concatenate(parts + [x], axis=-1))
    mean, raw_std = jnp.split(raw, 2, axis=-1)
    return jnp.concatenate([mean, self.min_std + (1 - self.min_std) * nn.softplus(raw_std)], axis=-1)

  def __call__(self, x: jax.Array, y: jax.Array, mask: jax.Array, x_target: jax.Array) -> jax.Array:
    encoding = self.encode(x, y, mask) if self.deterministic_path else None
    z = self.latent(x, y, mask)[0] if self.latent_dim else None
    return self.decode(encoding, z, x_target)


@functools.partial(jax.jit, static_argnames='model')
def init_params(model: NeuralProcess, key: jax.Array):
  """`model`'s parameters, initialised on a one-point context and target. One compiled program per model setting
  (the model is a static argument), reused by every call."""
  x, y = jnp.zeros((1, model.x_dim)), jnp.zeros((1, model.y_dim))
  return model.init(key, x, y, jnp.ones((1,), bool), x)
