"""Sinusoid regression tasks (Finn et al., 2017, arXiv:1703.03400, section 5.1)."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jmeta import losses
from jmeta.checks import check_positive_int
from jmeta.experiments import Data, Dataset, Option, register_dataset
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


def _load(c, data_dir=None):
  """The registry's sinusoid: Finn et al.'s 1-40-40-1 ReLU regressor, squared error, test MSE."""
  from jmeta.models.mlp import MLP
  model = MLP(hidden=(40, 40), out=1)

  def models(role: str):
    if role != 'predictor':
      raise ValueError(f'sinusoid provides a predictor model (a regressor), not an {role} model')
    return model

  test_tasks = sinusoid(c.shots, c.eval_queries)
  return Data(train_tasks=sinusoid(c.shots, c.queries), valid_tasks=test_tasks, test_tasks=test_tasks,
              model=models, example_x=jnp.zeros((c.shots, 1)), loss_fn=losses.mse, metrics_fn=None,
              score=losses.mse, metric='mse')


register_dataset(Dataset(
    name='sinusoid', kind='regression',
    summary='sine waves, amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5] (Finn et al., 2017, section 5.1)',
    options=(
        Option('shots', 'support points per task (default 10)'),
        Option('queries', 'query points per task while training (default: as many as shots)',
               default=lambda f: f['shots']),
        Option('eval_queries', 'query points per test task (default 100)'),
    ),
    # K = 10 as in the MAML paper; 100 query points per test task estimate each task's MSE closely.
    defaults=dict(shots=10, eval_queries=100),
    load=_load))
