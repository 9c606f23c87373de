"""Sinusoid regression tasks (Finn et al., 2017, arXiv:1703.03400, section 5.1)."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jmeta.checks import check_positive_int
from jmeta.tasks import Split, Task


class Wave(NamedTuple):
  """One task's function `amplitude * sin(x - phase)`."""
  amplitude: jax.Array
  phase: jax.Array

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.amplitude * jnp.sin(x - self.phase)


def sinusoid(
    shots: int = 10,
    queries: int | None = None,
    *,
    amplitude: tuple[float, float] = (0.1, 5.0),
    phase: tuple[float, float] = (0.0, math.pi),
    x_range: tuple[float, float] = (-5.0, 5.0),
) -> Callable[[jax.Array], Task]:
  """A sampler of sinusoid tasks: `sample(key) -> Task`, pure and jittable; `jax.vmap` it for a meta-batch.

  Amplitude, phase and inputs are uniform on their ranges (the MAML paper's defaults). The support set has
  `shots` points and the query set `queries` (default `shots`); `x` and `y` are `[points, 1]` float32.
  `wave(key)` gives the function the sampler draws for the same key.
  """
  shots = check_positive_int(shots, 'shots')
  queries = shots if queries is None else check_positive_int(queries, 'queries')
  for name, (low, high) in (('amplitude', amplitude), ('phase', phase), ('x_range', x_range)):
    if not low <= high:
      raise ValueError(f'{name} must be a (low, high) range with low <= high; got {(low, high)}')

  def sample(key: jax.Array) -> Task:
    key_wave, key_x = jax.random.split(key)
    f = wave(key_wave, amplitude=amplitude, phase=phase)
    x = jax.random.uniform(key_x, (shots + queries, 1), minval=x_range[0], maxval=x_range[1])
    y = f(x)
    return Task(Split(x[:shots], y[:shots]), Split(x[shots:], y[shots:]))

  return sample


def wave(key: jax.Array, *, amplitude=(0.1, 5.0), phase=(0.0, math.pi)) -> Wave:
  """The wave behind `sinusoid(...)(key)`: pass `jax.random.split(key)[0]` of the task's key."""
  key_a, key_p = jax.random.split(key)
  return Wave(jax.random.uniform(key_a, (), minval=amplitude[0], maxval=amplitude[1]),
              jax.random.uniform(key_p, (), minval=phase[0], maxval=phase[1]))
