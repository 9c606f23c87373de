"""The copy task of neural Turing machines (Graves, Wayne & Danihelka, 2014, arXiv:1410.5401, section 4.1).

A sequence of random binary vectors is shown, then a delimiter, and the learner must write the same vectors back
with no further input. It checks that a memory's addressing works: a controller that stores each vector in a slot
and walks the slots back copies sequences longer than any it was trained on, which an LSTM of the same size does
not. Sequences of varying length share one padded shape, so that batches of them run under `jax.vmap`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jmeta.checks import check_positive_int


class CopyTask(NamedTuple):
  """One copy sequence, padded to a fixed number of steps.

  Attributes:
    inputs: `[steps, bits + 1]`: the `length` vectors at steps `0..length-1` (last channel 0), the delimiter at
      step `length` (last channel 1, bits 0), then zeros.
    targets: `[steps, bits]`: the vectors again at steps `length + 1 .. 2 * length`, zeros elsewhere.
    mask: `[steps]` bool, True at the steps where the learner must write (`length + 1 .. 2 * length`).
  """
  inputs: jax.Array
  targets: jax.Array
  mask: jax.Array


def copy_sequences(bits: int = 8, lengths: tuple[int, int] = (1, 20), steps: int | None = None
                   ) -> Callable[[jax.Array], CopyTask]:
  """A sampler of copy sequences: `sample(key) -> CopyTask`, pure, for `jax.jit` and `jax.vmap`.

  Each sequence has a length uniform on `lengths` (inclusive) and bits that are fair coin flips. Graves et al.
  train on 8-bit vectors and lengths 1 to 20, and test on longer ones.

  Args:
    bits: width of each vector.
    lengths: `(shortest, longest)`, `1 <= shortest <= longest`.
    steps: padded length, at least `2 * longest + 1` (the default).
  """
  bits = check_positive_int(bits, 'bits')
  low, high = lengths
  check_positive_int(low, 'lengths[0]')
  if not low <= high:
    raise ValueError(f'lengths must be (shortest, longest) with 1 <= shortest <= longest; got {lengths!r}')
  steps = 2 * high + 1 if steps is None else check_positive_int(steps, 'steps')
  if steps < 2 * high + 1:
    raise ValueError(f'steps={steps} cannot hold a sequence of length {high}, its delimiter and its copy; need '
                     f'steps >= {2 * high + 1}')

  def sample(key: jax.Array) -> CopyTask:
    key_length, key_bits = jax.random.split(key)
    length = jax.random.randint(key_length, (), low, high + 1)
    t = jnp.arange(steps)
    vectors = jax.random.bernoulli(key_bits, 0.5, (steps, bits)).astype(jnp.float32)
    shown = jnp.where((t < length)[:, None], vectors, 0.0)
    delimiter = (t == length).astype(jnp.float32)[:, None]
    mask = (t > length) & (t <= 2 * length)
    # At step length + 1 + i the learner writes vector i.
    targets = jnp.where(mask[:, None], shown[jnp.clip(t - length - 1, 0, steps - 1)], 0.0)
    return CopyTask(jnp.concatenate([shown, delimiter], axis=1), targets, mask)

  return sample


StepFn = Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
"""`step(params, carry, x_t) -> (carry, logits_t [bits])`."""


def run(step_fn: StepFn, params, initial_carry, task: CopyTask) -> jax.Array:
  """The logits `[steps, bits]` of one sequence, read from `initial_carry` in one `lax.scan`."""
  return jax.lax.scan(lambda carry, x: step_fn(params, carry, x), initial_carry, task.inputs)[1]


def copy_loss(logits: jax.Array, task: CopyTask) -> jax.Array:
  """Binary cross-entropy of the written bits, summed over bits and averaged over the masked steps, a scalar."""
  per_bit = jnp.maximum(logits, 0) - logits * task.targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  per_step = jnp.sum(per_bit, axis=-1)
  return jnp.sum(jnp.where(task.mask, per_step, 0.0)) / jnp.maximum(jnp.sum(task.mask), 1)


def bit_errors(logits: jax.Array, task: CopyTask) -> jax.Array:
  """Bits written wrong over the whole sequence (the output thresholded at 1/2), Graves et al.'s error measure."""
  wrong = (logits > 0) != (task.targets > 0.5)
  return jnp.sum(jnp.where(task.mask[:, None], wrong, False)).astype(jnp.float32)
