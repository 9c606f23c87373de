"""Recurrent classifiers for label-offset sequences: an LSTM and a memory-augmented LSTM (Santoro et al., 2016).

Each is a Flax cell `(carry, x_t, previous_t) -> (carry, logits_t)` that reads one example `x_t` (any shape,
flattened) beside the one-hot label of the step before, with `initial_carry()` the state at the start of an
episode. `jmeta.sequence_learner` runs a cell over a `jmeta.SequenceTask` in one `lax.scan`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmeta.nn.memory import LRUAMemory, NTMMemory, initial_state

Carry = Any


class LSTMClassifier(nn.Module):
  """An LSTM over `[x_t, previous_t]` and a linear head: the baseline of Santoro et al. (2016).

  Attributes:
    classes: logits per step.
    hidden: LSTM units (the paper's LSTM baseline: 200).
  """
  classes: int
  hidden: int = 200

  def initial_carry(self, dtype=jnp.float32) -> Carry:
    """`(c, h)`, zeros `[hidden]` each."""
    return (jnp.zeros((self.hidden,), dtype), jnp.zeros((self.hidden,), dtype))

  @nn.compact
  def __call__(self, carry: Carry, x: jax.Array, previous: jax.Array) -> tuple[Carry, jax.Array]:
    inputs = jnp.concatenate([jnp.ravel(x), previous])
    carry, h = nn.OptimizedLSTMCell(self.hidden, name='lstm')(carry, inputs)
    return carry, nn.Dense(self.classes, name='head')(h)


class MANNClassifier(nn.Module):
  """A memory-augmented LSTM (Santoro et al., 2016, arXiv:1605.06065): an LSTM controller reads `[x_t, previous_t,
  r_{t-1}]`, drives an external memory (LRUA, or NTM addressing), and the head reads `[h_t, r_t]`.

  Attributes:
    classes: logits per step.
    hidden: controller LSTM units (the paper's Omniglot MANN: 200).
    slots, width, heads: memory of `slots x width` with `heads` read (and, under LRUA, write) heads (the paper:
      128 x 40, 4 heads).
    addressing: 'lrua' (the paper's) or 'ntm' (Graves et al., 2014).
    gamma: LRUA's usage decay (the paper: 0.95).
    learn_strength: LRUA reads sharpened by a learned strength, as NTM reads are (the paper: not).
  """
  classes: int
  hidden: int = 200
  slots: int = 128
  width: int = 40
  heads: int = 4
  addressing: str = 'lrua'
  gamma: float = 0.95
  learn_strength: bool = False

  def _memory(self) -> nn.Module:
    if self.addressing == 'lrua':
      return LRUAMemory(self.slots, self.width, self.heads, self.gamma, self.learn_strength, name='memory')
    if self.addressing == 'ntm':
      return NTMMemory(self.slots, self.width, self.heads, 1, name='memory')
    raise ValueError(f"MANNClassifier: addressing must be 'lrua' or 'ntm'; got {self.addressing!r}")

  def initial_carry(self, dtype=jnp.float32) -> Carry:
    """`((c, h), memory state, reads [heads * width])`, the memory as `jmeta.nn.memory.initial_state` gives."""
    write_heads = self.heads if self.addressing == 'lrua' else 1
    memory = initial_state(self.slots, self.width, self.heads, write_heads, dtype)
    zeros = jnp.zeros((self.hidden,), dtype)
    return ((zeros, zeros), memory, jnp.zeros((self.heads * self.width,), dtype))

  @nn.compact
  def __call__(self, carry: Carry, x: jax.Array, previous: jax.Array) -> tuple[Carry, jax.Array]:
    lstm, memory, reads = carry
    inputs = jnp.concatenate([jnp.ravel(x), previous, reads])
    lstm, h = nn.OptimizedLSTMCell(self.hidden, name='controller')(lstm, inputs)
    memory, reads = self._memory()(memory, h)
    logits = nn.Dense(self.classes, name='head')(jnp.concatenate([h, reads]))
    return (lstm, memory, reads), logits
