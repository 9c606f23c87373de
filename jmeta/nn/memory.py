"""External memory for memory-augmented networks, as pure functions over a `MemoryState` carried by `lax.scan`.

Two addressing modes:
- LRUA, least-recently-used access (Santoro et al., 2016, arXiv:1605.06065, section 3.2): reads by content
  (cosine similarity, a softmax sharpened by a strength); each head writes its key to an interpolation, by a
  learned gate, of the slots it read at the previous step and the least-used slot, after the least-used slots are
  erased. Usage decays by `gamma` and accumulates read and write weights.
- NTM addressing (Graves et al., 2014, arXiv:1410.5401, section 3.3): content weights, interpolation with the
  head's previous weights, a circular shift, and sharpening; writes erase then add.

The `*_step` functions take the controller's raw outputs already split per head; `LRUAMemory` and `NTMMemory` are
Flax modules that compute them from a controller's output with one dense layer. Memory is `[slots, width]`; every
per-head quantity has a leading `[heads]` axis. Batch over episodes with `jax.vmap`.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmeta.checks import check_positive_int

EPS = 1e-8
INIT_FILL = 1e-6
"""Initial value of every memory cell: a small constant rather than zero, so every slot has a direction (the
first reads spread evenly over unwritten slots) before it is written."""


class MemoryState(NamedTuple):
  """What a memory carries from step to step.

  Attributes:
    memory: `[slots, width]`.
    read_weights: `[read_heads, slots]`, each head's read weights at the previous step.
    write_weights: `[write_heads, slots]`, each head's write weights at the previous step (NTM addressing
      interpolates with them; LRUA keeps them for inspection).
    usage: `[slots]`, LRUA's usage weights `w^u` (zeros under NTM addressing, which has none).
  """
  memory: jax.Array
  read_weights: jax.Array
  write_weights: jax.Array
  usage: jax.Array


def initial_state(slots: int, width: int, read_heads: int = 1, write_heads: int | None = None,
                  dtype=jnp.float32) -> MemoryState:
  """The state at the start of an episode: memory filled with `INIT_FILL`, no slot used or attended to yet.

  Previous read and write weights are one-hot on slot 0, as in the authors' setup, so that LRUA's first write
  interpolates between slot 0 and the least-used slot, and NTM addressing has a location to shift from.
  """
  check_positive_int(slots, 'slots (memory slots)')
  check_positive_int(width, 'width (memory width)')
  check_positive_int(read_heads, 'read_heads')
  write_heads = read_heads if write_heads is None else check_positive_int(write_heads, 'write_heads')
  first = jax.nn.one_hot(0, slots, dtype=dtype)
  return MemoryState(jnp.full((slots, width), INIT_FILL, dtype), jnp.tile(first, (read_heads, 1)),
                     jnp.tile(first, (write_heads, 1)), jnp.zeros((slots,), dtype))


def smooth_norm(x: jax.Array) -> jax.Array:
  """`sqrt(|x|^2 + EPS^2)` over the last axis: the norm, with a finite gradient at zero (a controller whose state
  and inputs are all zero, as at the start of an episode, emits an exactly zero key)."""
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=-1) + EPS ** 2)


def cosine_similarity(keys: jax.Array, memory: jax.Array) -> jax.Array:
  """`[heads, width]` keys against `[slots, width]` memory -> `[heads, slots]` cosine similarities
  `k . m / (smooth_norm(k) smooth_norm(m))`."""
  return (keys @ memory.T) / (smooth_norm(keys)[:, None] * smooth_norm(memory)[None, :])


def content_weights(keys: jax.Array, strengths: jax.Array, memory: jax.Array) -> jax.Array:
  """`softmax_i(strength * cos(key, memory[i]))` per head: `[heads, slots]`; `strengths: [heads]`, positive."""
  return jax.nn.softmax(strengths[:, None] * cosine_similarity(keys, memory), axis=-1)


def least_used(usage: jax.Array, heads: int) -> jax.Array:
  """`[heads, slots]`: row h is one-hot on the slot of the h-th smallest usage (ties broken by slot order).

  Their sum is Santoro et al.'s `w^lu` (eq. 8): ones on the `heads` least-used slots; one row per head makes the
  heads write to distinct slots.
  """
  # `heads` argmins over the slots not taken yet, not an argsort: XLA:CPU sorts slowly, and this runs every step.
  rows, taken = [], jnp.zeros(usage.shape, jnp.bool_)
  for _ in range(heads):
    row = jax.nn.one_hot(jnp.argmin(jnp.where(taken, jnp.inf, usage)), usage.shape[0], dtype=usage.dtype)
    rows.append(row)
    taken = taken | (row > 0)
  return jnp.stack(rows)


def lrua_step(state: MemoryState, keys: jax.Array, gates: jax.Array, gamma: float | jax.Array,
              strengths: jax.Array | None = None) -> tuple[MemoryState, jax.Array]:
  """One LRUA write then read (Santoro et al., 2016, eqs. 3-8).

  Args:
    state: the previous `MemoryState`, with as many read as write heads.
    keys: `[heads, width]`, each head's key: written to memory, then read with.
    gates: `[heads]` logits of `sigma(alpha)`, the share of each head's write that goes to the slots it read at
      the previous step (the rest goes to its least-used slot).
    gamma: usage decay in [0, 1].
    strengths: `[heads]` positive sharpening of the read softmax, or None for 1 (the paper's plain softmax).

  Returns:
    The new state and the reads `[heads, width]`.

  Order: `w^lu_{t-1}` from `w^u_{t-1}`; `w^w_t = sigma(alpha) w^r_{t-1} + (1 - sigma(alpha)) w^lu_{t-1}`; the
  least-used slots are zeroed and `M_t = M_{t-1} + (w^w_t)^T k_t`; `w^r_t` by content from `M_t`;
  `w^u_t = gamma w^u_{t-1} + sum_heads w^r_t + sum_heads w^w_t`.
  """
  heads = keys.shape[0]
  if state.read_weights.shape[0] != heads or state.write_weights.shape[0] != heads:
    raise ValueError(f'lrua_step: {heads} heads of keys, but the state has {state.read_weights.shape[0]} read and '
                     f'{state.write_weights.shape[0]} write heads')
  lu_prev = least_used(state.usage, heads)
  sigma = jax.nn.sigmoid(gates)[:, None]
  write_weights = sigma * state.read_weights + (1.0 - sigma) * lu_prev
  erased = state.memory * (1.0 - jnp.sum(lu_prev, axis=0))[:, None]
  memory = erased + write_weights.T @ keys
  if strengths is None:
    strengths = jnp.ones((heads,), keys.dtype)
  read_weights = content_weights(keys, strengths, memory)
  usage = gamma * state.usage + jnp.sum(read_weights, axis=0) + jnp.sum(write_weights, axis=0)
  return MemoryState(memory, read_weights, write_weights, usage), read_weights @ memory


class NTMHead(NamedTuple):
  """The addressing parameters of NTM heads, already squashed to their ranges (Graves et al., eqs. 5-9).

  Attributes:
    keys: `[heads, width]`.
    strengths: `[heads]`, `beta >= 0`.
    gates: `[heads]`, interpolation `g` in [0, 1].
    shifts: `[heads, shift_size]`, a distribution over the shifts `-(shift_size // 2) .. shift_size // 2`.
    sharpening: `[heads]`, `gamma >= 1`.
  """
  keys: jax.Array
  strengths: jax.Array
  gates: jax.Array
  shifts: jax.Array
  sharpening: jax.Array


def ntm_address(head: NTMHead, previous: jax.Array, memory: jax.Array) -> jax.Array:
  """NTM weights `[heads, slots]` from `previous` weights `[heads, slots]`: content, interpolation, circular
  shift (`w~(i) = sum_j w^g(j) s(i - j)`), sharpening."""
  content = content_weights(head.keys, head.strengths, memory)
  gated = head.gates[:, None] * content + (1.0 - head.gates[:, None]) * previous
  radius = head.shifts.shape[-1] // 2
  shifted = sum(head.shifts[:, radius + s, None] * jnp.roll(gated, s, axis=-1) for s in range(-radius, radius + 1))
  powered = (shifted + EPS) ** head.sharpening[:, None]
  return powered / jnp.sum(powered, axis=-1, keepdims=True)


def ntm_write(memory: jax.Array, weights: jax.Array, erase: jax.Array, add: jax.Array) -> jax.Array:
  """`M(i) <- M(i) prod_h (1 - w_h(i) e_h) + sum_h w_h(i) a_h` (Graves et al., eqs. 3-4); `erase` in [0, 1] and
  `add` are `[heads, width]`."""
  keep = jnp.prod(1.0 - weights[:, :, None] * erase[:, None, :], axis=0)
  return memory * keep + weights.T @ add


def ntm_step(state: MemoryState, read: NTMHead, write: NTMHead, erase: jax.Array, add: jax.Array
             ) -> tuple[MemoryState, jax.Array]:
  """One NTM write then read: write heads address from their previous weights and the previous memory, write,
  then read heads address the new memory. Returns the new state and the reads `[read_heads, width]`."""
  write_weights = ntm_address(write, state.write_weights, state.memory)
  memory = ntm_write(state.memory, write_weights, erase, add)
  read_weights = ntm_address(read, state.read_weights, memory)
  return MemoryState(memory, read_weights, write_weights, state.usage), read_weights @ memory


class LRUAMemory(nn.Module):
  """LRUA memory driven by a controller: `(state, hidden [features]) -> (state, reads [heads * width])`.

  One dense layer maps the controller's output to each head's key (tanh) and gate logit (Santoro et al.'s
  `k_t` and `alpha`); with `learn_strength`, also a read strength `softplus(.)`.

  Attributes:
    slots, width, heads: memory size and read/write heads.
    gamma: usage decay (the paper's 0.95 for Omniglot).
    learn_strength: whether the read softmax has a learned sharpening strength (1 if not, as in the paper).
  """
  slots: int = 128
  width: int = 40
  heads: int = 4
  gamma: float = 0.95
  learn_strength: bool = False

  def initial_state(self, dtype=jnp.float32) -> MemoryState:
    return initial_state(self.slots, self.width, self.heads, dtype=dtype)

  @nn.compact
  def __call__(self, state: MemoryState, hidden: jax.Array) -> tuple[MemoryState, jax.Array]:
    h, w = self.heads, self.width
    out = nn.Dense(h * (w + 1 + int(self.learn_strength)), name='heads')(hidden)
    keys = jnp.tanh(out[:h * w].reshape(h, w))
    gates = out[h * w:h * (w + 1)]
    strengths = jax.nn.softplus(out[h * (w + 1):]) if self.learn_strength else None
    state, reads = lrua_step(state, keys, gates, self.gamma, strengths)
    return state, reads.reshape(-1)


class NTMMemory(nn.Module):
  """NTM memory driven by a controller: `(state, hidden [features]) -> (state, reads [read_heads * width])`.

  One dense layer gives every head's key, strength, gate, shift distribution and sharpening, and each write
  head's erase (sigmoid) and add (tanh) vectors.

  Attributes:
    slots, width: memory size.
    read_heads, write_heads: numbers of heads.
    shift_range: allowed shifts `-shift_range .. shift_range` (1 in Graves et al.'s copy task).
  """
  slots: int = 128
  width: int = 20
  read_heads: int = 1
  write_heads: int = 1
  shift_range: int = 1

  def initial_state(self, dtype=jnp.float32) -> MemoryState:
    return initial_state(self.slots, self.width, self.read_heads, self.write_heads, dtype=dtype)

  def _head(self, raw: jax.Array, heads: int) -> NTMHead:
    w, s = self.width, 2 * self.shift_range + 1
    raw = raw.reshape(heads, w + 3 + s)
    return NTMHead(keys=jnp.tanh(raw[:, :w]), strengths=jax.nn.softplus(raw[:, w]),
                   gates=jax.nn.sigmoid(raw[:, w + 1]), shifts=jax.nn.softmax(raw[:, w + 2:w + 2 + s], axis=-1),
                   sharpening=1.0 + jax.nn.softplus(raw[:, w + 2 + s]))

  @nn.compact
  def __call__(self, state: MemoryState, hidden: jax.Array) -> tuple[MemoryState, jax.Array]:
    w, s = self.width, 2 * self.shift_range + 1
    per_head = w + 3 + s
    r, v = self.read_heads, self.write_heads
    out = nn.Dense(r * per_head + v * (per_head + 2 * w), name='heads')(hidden)
    read = self._head(out[:r * per_head], r)
    rest = out[r * per_head:].reshape(v, per_head + 2 * w)
    write = self._head(rest[:, :per_head], v)
    erase, add = jax.nn.sigmoid(rest[:, per_head:per_head + w]), jnp.tanh(rest[:, per_head + w:])
    state, reads = ntm_step(state, read, write, erase, add)
    return state, reads.reshape(-1)
