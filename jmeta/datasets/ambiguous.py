"""Ambiguous 1-D regression: half the tasks sine waves, half lines, noisy targets (Finn, Xu & Levine, 2018,
arXiv:1806.02817, section 5.1, the regression tasks of PLATIPUS).

A task is a sine `amplitude * sin(x - phase)` (amplitude U[0.1, 5], phase U[0, pi], as the MAML sinusoid) or a line
`slope * x + intercept` (both U[-3, 3]), each with probability 1/2; inputs are U[-5, 5] and targets carry Gaussian
noise. Five support points of a noisy sine can often be fitted by a line too, and the other way round: the
support set does not say which family, let alone which function, the task is.

Ambiguity. The paper shows sampled functions for support sets that a sine and a line both explain; this module
makes them two ways: `window=w` draws the support inputs from a window of width `w` (anywhere in the input range)
while the query set spans the whole range, so that a sine looks locally like a line; and `fits(x, y)` gives the
least-squares sine and line through any points, with which a support set is called ambiguous when both families
fit it, with parameters in their prior ranges, to within the noise (`ambiguous`).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jmeta import losses
from jmeta.checks import check_positive_int, check_positive_number
from jmeta.experiments import Data, Dataset, Option, register_dataset
from jmeta.tasks import Split, Task

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
SLOPE = (-3.0, 3.0)
INTERCEPT = (-3.0, 3.0)
X_RANGE = (-5.0, 5.0)
NOISE = 0.3
"""Standard deviation of the targets' Gaussian noise (PLATIPUS' ambiguous regression; recalled from the paper's
appendix, not checked against it in this repository: pass `noise=` to change it)."""


class SineOrLine(NamedTuple):
  """One task's function: `amplitude * sin(x - phase)` where `is_sine`, else `slope * x + intercept`."""
  is_sine: jax.Array
  amplitude: jax.Array
  phase: jax.Array
  slope: jax.Array
  intercept: jax.Array

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.where(self.is_sine, self.amplitude * jnp.sin(x - self.phase), self.slope * x + self.intercept)


def _check_range(name: str, r: tuple[float, float], strict: bool = False) -> tuple[float, float]:
  low, high = r
  if not (low < high if strict else low <= high):
    raise ValueError(f'{name} must be a (low, high) range with low {"<" if strict else "<="} high; got {r!r}')
  return float(low), float(high)


def sine_or_line(key: jax.Array, *, amplitude=AMPLITUDE, phase=PHASE, slope=SLOPE, intercept=INTERCEPT,
                 sine_fraction: float = 0.5) -> SineOrLine:
  """A function drawn from the mixture: a sine with probability `sine_fraction`, else a line; all scalars."""
  k_family, k_a, k_p, k_s, k_i = jax.random.split(key, 5)
  uniform = lambda k, r: jax.random.uniform(k, (), minval=r[0], maxval=r[1])
  return SineOrLine(jax.random.bernoulli(k_family, sine_fraction), uniform(k_a, amplitude), uniform(k_p, phase),
                    uniform(k_s, slope), uniform(k_i, intercept))


def sine_line(
    shots: int = 5,
    queries: int | None = None,
    *,
    noise: float = NOISE,
    window: float | None = None,
    amplitude: tuple[float, float] = AMPLITUDE,
    phase: tuple[float, float] = PHASE,
    slope: tuple[float, float] = SLOPE,
    intercept: tuple[float, float] = INTERCEPT,
    x_range: tuple[float, float] = X_RANGE,
    sine_fraction: float = 0.5,
) -> Callable[[jax.Array], Task]:
  """A sampler of sine-or-line tasks: `sample(key) -> Task`, pure and jittable; `jax.vmap` it for a meta-batch.

  Args:
    shots: support points; queries: query points (default `shots`).
    noise: standard deviation of the Gaussian noise on every target, support and query alike (> 0).
    window: if given, the support inputs are uniform on `[c, c + window]`, `c ~ U[x_low, x_high - window]`, the
      query inputs on the whole `x_range` (ambiguous support sets); None: both on `x_range`.
    amplitude, phase, slope, intercept, x_range: uniform ranges; sine_fraction: the probability of a sine.

  Returns:
    `sample(key) -> Task` with `x`, `y` of `[shots, 1]` and `[queries, 1]`; `function(key)` on the sampler is the
    noiseless `SineOrLine` behind `sample(key)`.
  """
  shots = check_positive_int(shots, 'shots')
  queries = shots if queries is None else check_positive_int(queries, 'queries')
  noise = check_positive_number(noise, 'noise')
  ranges = dict(amplitude=_check_range('amplitude', amplitude), phase=_check_range('phase', phase),
                slope=_check_range('slope', slope), intercept=_check_range('intercept', intercept))
  low, high = _check_range('x_range', x_range, strict=True)
  if window is not None and not 0 < window <= high - low:
    raise ValueError(f'window must be in (0, {high - low}] (the width of x_range); got {window!r}')
  if not 0 <= sine_fraction <= 1:
    raise ValueError(f'sine_fraction must be a probability in [0, 1]; got {sine_fraction!r}')

  def function(key: jax.Array) -> SineOrLine:
    return sine_or_line(jax.random.split(key, 4)[0], sine_fraction=sine_fraction, **ranges)

  def sample(key: jax.Array) -> Task:
    _, k_xs, k_xq, k_noise = jax.random.split(key, 4)
    f = function(key)
    if window is None:
      xs = jax.random.uniform(k_xs, (shots, 1), minval=low, maxval=high)
    else:
      k_start, k_xs = jax.random.split(k_xs)
      start = jax.random.uniform(k_start, (), minval=low, maxval=high - window)
      xs = start + jax.random.uniform(k_xs, (shots, 1), maxval=window)
    xq = jax.random.uniform(k_xq, (queries, 1), minval=low, maxval=high)
    x = jnp.concatenate([xs, xq])
    y = f(x) + noise * jax.random.normal(k_noise, x.shape)
    return Task(Split(x[:shots], y[:shots]), Split(x[shots:], y[shots:]))

  sample.function = function
  return sample


class Fits(NamedTuple):
  """Least-squares fits of both families through some points.

  `sine`: `(alpha, beta)` of `alpha sin x + beta cos x` (`amplitude = hypot(alpha, beta)`, and `beta = -amplitude *
  sin(phase)`, so `beta <= 0` for phases in [0, pi]); `line`: `(slope, intercept)`; `*_rms`: root mean squared
  residuals.
  """
  sine: jax.Array
  line: jax.Array
  sine_rms: jax.Array
  line_rms: jax.Array


def fits(x: jax.Array, y: jax.Array) -> Fits:
  """The least-squares sine (`alpha sin x + beta cos x`, phases unconstrained) and line through `x, y: [n]` or
  `[n, 1]`; both families are linear in their two parameters, so each fit is one linear solve."""
  x, y = jnp.reshape(x, -1), jnp.reshape(y, -1)
  out = []
  for basis in (jnp.stack([jnp.sin(x), jnp.cos(x)], 1), jnp.stack([x, jnp.ones_like(x)], 1)):
    coef = jnp.linalg.lstsq(basis, y)[0]
    out += [coef, jnp.sqrt(jnp.mean(jnp.square(basis @ coef - y)))]
  return Fits(out[0], out[2], out[1], out[3])


def is_sine(x: jax.Array, y: jax.Array) -> jax.Array:
  """Whether the sine family fits `y` at `x` better than the line family (e.g. a sampled function on a grid)."""
  f = fits(x, y)
  return f.sine_rms < f.line_rms


def ambiguous(support: Split, noise: float = NOISE, *, amplitude=AMPLITUDE, phase=PHASE, slope=SLOPE,
              intercept=INTERCEPT) -> jax.Array:
  """Whether both a sine and a line from the prior's ranges fit `support` to within `noise` (RMS residual), a
  bool scalar. The fits are unconstrained least squares whose parameters are then checked against the ranges."""
  f = fits(support.x, support.y)
  amp = jnp.hypot(f.sine[0], f.sine[1])
  ph = jnp.arctan2(-f.sine[1], f.sine[0])  # alpha = A cos p, beta = -A sin p
  ph = jnp.where(ph < phase[0], ph + 2 * jnp.pi, ph)
  sine_ok = (f.sine_rms <= noise) & (amp >= amplitude[0]) & (amp <= amplitude[1]) & (ph <= phase[1])
  line_ok = ((f.line_rms <= noise) & (f.line[0] >= slope[0]) & (f.line[0] <= slope[1]) & (f.line[1] >= intercept[0])
             & (f.line[1] <= intercept[1]))
  return sine_ok & line_ok


def _load(c, data_dir=None):
  """The registry's ambiguous regression: Finn et al.'s 1-40-40-1 ReLU regressor, scored by the log-likelihood of
  the query targets under the learner's (mixture of) Gaussians."""
  del data_dir
  from jmeta.models.mlp import MLP
  model = MLP(hidden=(40, 40), out=1)

  def models(role: str):
    if role != 'predictor':
      raise ValueError(f'ambiguous provides a predictor model (a regressor), not an {role} model')
    return model

  test_tasks = sine_line(c.shots, c.eval_queries, noise=c.noise, window=c.window)
  return Data(train_tasks=sine_line(c.shots, c.queries, noise=c.noise), valid_tasks=test_tasks,
              test_tasks=test_tasks, model=models, example_x=jnp.zeros((c.shots, 1)), loss_fn=losses.gaussian_nll,
              metrics_fn=None, score=losses.gaussian_log_likelihood, metric='log_likelihood')


def _check(c) -> None:
  if c.window is not None and c.window > X_RANGE[1] - X_RANGE[0]:
    raise ValueError(f'ambiguous: window must be at most {X_RANGE[1] - X_RANGE[0]} (the width of x); got {c.window}')


register_dataset(Dataset(
    name='ambiguous', kind='regression',
    summary='half sines (amplitude U[0.1, 5], phase U[0, pi]), half lines (slope, intercept U[-3, 3]), x U[-5, 5], '
    'noisy targets (Finn, Xu & Levine, 2018); the metric is the query log-likelihood per point, higher is better',
    options=(
        Option('shots', 'support points per task (default 5)'),
        Option('queries', 'query points per task while training (default: as many as shots)',
               default=lambda f: f['shots']),
        Option('eval_queries', 'query points per validation and test task (default 100)'),
        Option('noise', 'standard deviation of the targets\' Gaussian noise (default 0.3)', float),
        Option('window', 'test support inputs from a window this wide, for ambiguous support sets (default: the '
               'whole x range)', float, optional=True),
    ),
    # PLATIPUS' ambiguous regression: 5 shots; 100 query points per test task estimate each task's score closely.
    defaults=dict(shots=5, eval_queries=100, noise=NOISE),
    load=_load, check=_check))
