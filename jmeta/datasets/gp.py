"""Function-regression tasks: 1-D functions drawn from a Gaussian process, with context and target points.

A function-regression task is a `jmeta.Task`: the context points are its support set and the target points its
query set, each padded to a fixed size with a mask (`jmeta.Split.mask`) so that the number of points can vary per
task under `jax.jit` and `jax.vmap`. A neural process's `adapt` encodes the real context points, a MAML learner takes
its inner steps on them, and both are scored on the real target points, from the same tasks.
"""

from __future__ import annotations

import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jmeta import losses
from jmeta.checks import check_positive_number
from jmeta.experiments import Data, Dataset, Option, register_dataset
from jmeta.tasks import Split, Task, real


def rbf_kernel(x1: jax.Array, x2: jax.Array, lengthscale: float = 0.4, scale: float = 1.0) -> jax.Array:
  """The squared-exponential kernel `scale**2 * exp(-|x1_i - x2_j|**2 / (2 * lengthscale**2))`.

  Args:
    x1: `[n, dim]`. x2: `[m, dim]`.

  Returns:
    `[n, m]`.
  """
  sq = jnp.sum(jnp.square(x1[:, None, :] - x2[None, :, :]), axis=-1)
  return scale ** 2 * jnp.exp(-0.5 * sq / lengthscale ** 2)


def gp_sample(key: jax.Array, x: jax.Array, *, lengthscale: float = 0.4, scale: float = 1.0,
              noise: float = 2e-2) -> jax.Array:
  """One draw of a zero-mean Gaussian process at `x: [points, dim]`, `[points, 1]`.

  The covariance is `rbf_kernel(x, x, lengthscale, scale) + noise**2 * I`; `y = cholesky(cov) @ z` with `z`
  standard normal. `noise` is the standard deviation the DeepMind notebooks add to the diagonal (2e-2) so that the
  Cholesky factorisation stays stable in float32.
  """
  cov = rbf_kernel(x, x, lengthscale, scale) + noise ** 2 * jnp.eye(x.shape[0], dtype=x.dtype)
  return jnp.linalg.cholesky(cov) @ jax.random.normal(key, (x.shape[0], 1), x.dtype)


def _count_range(value: int | tuple[int, int], name: str, minimum: int) -> tuple[int, int]:
  low, high = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
  if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in (low, high)) or not minimum <= low <= high:
    raise ValueError(f'{name} must be an integer >= {minimum} or a range (low, high) of integers with '
                     f'{minimum} <= low <= high; got {value!r}')
  return int(low), int(high)


class Kernel(NamedTuple):
  """The squared-exponential kernel of one task: lengthscale and scale, scalars."""
  lengthscale: jax.Array
  scale: jax.Array


Range = float | tuple[float, float]


def _value_range(value: Range, name: str) -> tuple[float, float]:
  low, high = (value, value) if isinstance(value, numbers.Real) else tuple(value)
  low, high = check_positive_number(low, name), check_positive_number(high, name)
  if low > high:
    raise ValueError(f'{name} must be a positive number or a range (low, high) with 0 < low <= high; got {value!r}')
  return low, high


def task_kernel(key: jax.Array, *, lengthscale: Range = 0.4, scale: Range = 1.0) -> Kernel:
  """The kernel `gp_functions(lengthscale=..., scale=...)` draws for the task of `key` (the task's own key).

  A number is used as is; a range `(low, high)` is drawn uniformly per task, from `jax.random.fold_in` of the
  key that draws `y` (1 for the lengthscale, 2 for the scale).
  """
  key_y = jax.random.split(key, 4)[1]

  def draw(value, i):
    if isinstance(value, numbers.Real):
      return jnp.asarray(value, jnp.float32)
    return jax.random.uniform(jax.random.fold_in(key_y, i), (), minval=value[0], maxval=value[1])

  return Kernel(draw(lengthscale, 1), draw(scale, 2))


def gp_functions(
    context: int | tuple[int, int] = (3, 9),
    extra: int | tuple[int, int] = (2, 9),
    *,
    lengthscale: Range = 0.4,
    scale: Range = 1.0,
    noise: float = 2e-2,
    x_range: tuple[float, float] = (-2.0, 2.0),
    targets_include_context: bool = True,
    max_points: int | None = None,
) -> Callable[[jax.Array], Task]:
  """A sampler of Gaussian-process regression tasks: `sample(key) -> Task` with masked splits, pure and jittable.

  Each task draws `x` uniform on `x_range` and one function from `gp_sample` at those points, then a number of
  context points uniform on `context` and of extra target points uniform on `extra` (both inclusive ranges; an int
  fixes the number). The defaults are the settings of DeepMind's conditional neural process notebook (Garnelo et
  al., 2018, arXiv:1807.01613; also the 1-D experiments of Garnelo et al., 2018, arXiv:1807.01622): lengthscale 0.4,
  scale 1, diagonal noise 2e-2, `x` in [-2, 2], 3 to 9 context points and 2 to 9 more targets, the targets
  including the context points (`MAX_CONTEXT_POINTS = 10` there). The attentive NP notebook (Kim et al., 2019,
  arXiv:1901.05761) draws a kernel per task, lengthscale uniform on [0.1, 0.6] and scale on [0.1, 1], with 3 to
  49 context points and at most 49 points in all: `context=(3, 49), extra=(0, 46), max_points=49,
  lengthscale=(0.1, 0.6), scale=(0.1, 1.0)`. `task_kernel(key, ...)` gives a task's kernel (for the exact GP,
  `gp_predictive`).

  Layout, fixed whatever the counts: the support set (context) is the first `max_context` points with mask
  `arange(max_context) < n_context`; the query set (targets) is all `max_context + max_extra` points with the
  context's mask followed by `arange(max_extra) < n_extra`, or, with `targets_include_context=False`, the last
  `max_extra` points alone. `y` at the task's points is `gp_sample(jax.random.split(key, 4)[1], x, ...)` with the
  kernel `task_kernel(key, ...)`.

  Args:
    context, extra: the numbers of context and of extra target points, each an int or an inclusive range.
    lengthscale, scale: the kernel's, each a number or a range `(low, high)` to draw per task.
    noise: the standard deviation of the observation noise.
    x_range: where `x` is drawn, uniformly.
    targets_include_context: whether the targets hold the context points too.
    max_points: if given, at most this many points in all: the extra count is uniform on
      `[extra_low, min(extra_high, max_points - n_context)]`.

  Returns:
    `sample(key) -> Task` with `x`, `y` `[points, 1]` float32 and bool masks `[points]`.

  Raises:
    ValueError: for count ranges that are not integers with `1 <= low <= high` (`0 <= low` for `extra`), a
      non-positive lengthscale, scale or noise (or a range of them with low > high), an empty `x_range`, or a
      `max_points` below `context_high + extra_low`.
  """
  c_low, c_high = _count_range(context, 'context', 1)
  e_low, e_high = _count_range(extra, 'extra', 0)
  if not targets_include_context and e_high == 0:
    raise ValueError('extra must allow at least one target point when targets_include_context=False; got '
                     f'{extra!r}')
  if max_points is not None and (isinstance(max_points, bool) or not isinstance(max_points, numbers.Integral)
                                 or max_points < c_high + e_low):
    raise ValueError(f'max_points must be an integer >= the most context points plus the fewest extra points '
                     f'({c_high} + {e_low}); got {max_points!r}')
  ranges = dict(lengthscale=_value_range(lengthscale, 'lengthscale'), scale=_value_range(scale, 'scale'))
  ranges = {k: v[0] if v[0] == v[1] else v for k, v in ranges.items()}
  noise = check_positive_number(noise, 'noise')
  low, high = x_range
  if not low < high:
    raise ValueError(f'x_range must be (low, high) with low < high; got {x_range!r}')

  def sample(key: jax.Array) -> Task:
    key_x, key_y, key_c, key_e = jax.random.split(key, 4)
    x = jax.random.uniform(key_x, (c_high + e_high, 1), minval=low, maxval=high)
    kernel = task_kernel(key, **ranges)
    y = gp_sample(key_y, x, lengthscale=kernel.lengthscale, scale=kernel.scale, noise=noise)
    n_context = jax.random.randint(key_c, (), c_low, c_high + 1)
    most = e_high if max_points is None else jnp.minimum(e_high, max_points - n_context)
    n_extra = jax.random.randint(key_e, (), e_low, most + 1)
    context_mask = jnp.arange(c_high) < n_context
    extra_mask = jnp.arange(e_high) < n_extra
    support = Split(x[:c_high], y[:c_high], context_mask)
    if targets_include_context:
      return Task(support, Split(x, y, jnp.concatenate([context_mask, extra_mask])))
    return Task(support, Split(x[c_high:], y[c_high:], extra_mask))

  return sample


def _conditional(context: Split, x: jax.Array, lengthscale, scale, noise):
  """`(L, alpha, v)` of the masked context: `L L^T = K_cc + noise**2 I` with padded rows and columns replaced by
  the identity's, `alpha = (L L^T)^-1 y_c` (padded y as 0), and `v = L^-1 K_cx` (padded rows 0)."""
  m = real(context)
  k = rbf_kernel(context.x, context.x, lengthscale, scale) * (m[:, None] & m[None, :])
  # Padding decouples exactly: a block-diagonal matrix whose padded block is the identity, with zero cross terms.
  chol = jnp.linalg.cholesky(k + jnp.diag(jnp.where(m, noise ** 2, 1.0).astype(k.dtype)))
  y = jnp.where(m[:, None], jnp.reshape(context.y, (m.shape[0], -1)), 0)
  alpha = jax.scipy.linalg.cho_solve((chol, True), y)
  cross = rbf_kernel(context.x, x, lengthscale, scale) * m[:, None]
  return chol, alpha, jax.scipy.linalg.solve_triangular(chol, cross, lower=True)


def gp_predictive(context: Split, x: jax.Array, *, lengthscale: float = 0.4, scale: float = 1.0,
                  noise: float = 2e-2) -> tuple[jax.Array, jax.Array]:
  """The exact GP posterior predictive of a new noisy observation at each `x`, given the real context points.

  With the kernel the data were drawn from, this is the best predictive any learner can reach (the "physical
  limit" of a neural process on `gp_functions` tasks). Padded context points (`context.mask` False) do not change
  the result: they are decoupled exactly, not down-weighted.

  Args:
    context: `Split` with `x: [n, dim]`, `y: [n, outputs]` and an optional mask `[n]`.
    x: `[targets, dim]`.
    lengthscale, scale, noise: the kernel's (numbers or scalar arrays, e.g. from `task_kernel`).

  Returns:
    `(mean, std)`, each `[targets, outputs]`: `K_xc A^-1 y_c` and `sqrt(scale**2 + noise**2 - K_xc A^-1 K_cx)`
    with `A = K_cc + noise**2 I` (Rasmussen & Williams, 2006, eq. 2.23-2.24).
  """
  chol, alpha, v = _conditional(context, x, lengthscale, scale, noise)
  cross = rbf_kernel(x, context.x, lengthscale, scale) * real(context)[None, :]
  mean = cross @ alpha
  var = scale ** 2 + noise ** 2 - jnp.sum(jnp.square(v), axis=0)
  std = jnp.sqrt(jnp.maximum(var, noise ** 2))  # var >= noise**2 exactly; rounding must not take it below
  return mean, jnp.broadcast_to(std[:, None], mean.shape)


def gp_log_likelihood(context: Split, targets: Split, *, lengthscale: float = 0.4, scale: float = 1.0,
                      noise: float = 2e-2) -> jax.Array:
  """The log-density of each target under the exact GP predictive (`gp_predictive`), `[targets]`.

  Each target's own (marginal) predictive, summed over outputs: the quantity a neural process's
  `jmeta.losses.gaussian_log_likelihood` scores, point by point. Average the real targets with
  `jmeta.losses.masked_mean(values, targets.mask)`; padded targets get finite values of no meaning.
  """
  mean, std = gp_predictive(context, targets.x, lengthscale=lengthscale, scale=scale, noise=noise)
  y = jnp.reshape(targets.y, mean.shape)
  return jnp.sum(losses.normal_log_prob(y, mean, std), axis=-1)


def gp_joint_log_likelihood(context: Split, targets: Split, *, lengthscale: float = 0.4, scale: float = 1.0,
                            noise: float = 2e-2) -> jax.Array:
  """`log p(y_T | y_C)` of the real targets jointly under the exact GP posterior, a scalar (sum over targets and
  outputs; divide by the number of real targets for a per-point figure). Padded targets and context points do not
  change it."""
  m = real(targets)
  chol_c, alpha, v = _conditional(context, targets.x, lengthscale, scale, noise)
  cov = rbf_kernel(targets.x, targets.x, lengthscale, scale) - v.T @ v
  cov = cov * (m[:, None] & m[None, :]) + jnp.diag(jnp.where(m, noise ** 2, 1.0).astype(cov.dtype))
  cross = rbf_kernel(targets.x, context.x, lengthscale, scale) * real(context)[None, :]
  residual = jnp.where(m[:, None], jnp.reshape(targets.y, (m.shape[0], -1)) - cross @ alpha, 0)
  chol = jnp.linalg.cholesky(cov)
  w = jax.scipy.linalg.solve_triangular(chol, residual, lower=True)
  outputs = residual.shape[1]
  n = jnp.sum(m)
  return (-0.5 * jnp.sum(jnp.square(w)) - outputs * jnp.sum(jnp.log(jnp.diag(chol)))
          - 0.5 * outputs * n * jnp.log(2 * jnp.pi))


RANDOM_KERNEL = dict(lengthscale=(0.1, 0.6), scale=(0.1, 1.0))
"""The attentive NP notebook's kernels (Kim et al., 2019): lengthscale uniform on [0.1, 0.6], scale on [0.1, 1]."""


def _check(c) -> None:
  if c.context_min > c.context_max or c.extra_min > c.extra_max:
    raise ValueError(f'gp: the point counts need context_min <= context_max and extra_min <= extra_max; got context '
                     f'{c.context_min}..{c.context_max}, extra {c.extra_min}..{c.extra_max}')
  if c.max_points is not None and c.max_points < c.context_max + c.extra_min:
    raise ValueError(f'gp: max_points must be at least context_max + extra_min = {c.context_max + c.extra_min}; '
                     f'got {c.max_points}')


def _load(c, data_dir=None):
  """The registry's gp: training tasks as the notebooks draw them (targets include the context); validation and
  test tasks with `eval_targets` held-out targets that exclude the context, where the exact GP is the limit."""
  del data_dir
  kernel = RANDOM_KERNEL if c.random_kernel else {}
  context = (c.context_min, c.context_max)
  train = gp_functions(context, (c.extra_min, c.extra_max), max_points=c.max_points, **kernel)
  test = gp_functions(context, c.eval_targets, targets_include_context=False, **kernel)

  def models(role: str):
    raise ValueError(f'gp provides no {role} model: neural processes (cnp, np, anp) build their own from the '
                     'tasks\' shapes')

  return Data(train_tasks=train, valid_tasks=test, test_tasks=test, model=models, example_x=jnp.zeros((2, 1)),
              loss_fn=losses.gaussian_nll, metrics_fn=None, score=losses.gaussian_log_likelihood,
              metric='log_likelihood')


register_dataset(Dataset(
    name='gp', kind='regression',
    summary='1-D Gaussian-process functions, squared-exponential kernel, x U[-2, 2], noise 0.02 (the DeepMind '
    'neural process notebooks); the metric is the target log-likelihood per point, higher is better',
    options=(
        Option('context_min', 'fewest context points per task (default 3)'),
        Option('context_max', 'most context points per task (default 9)'),
        Option('extra_min', 'fewest target points beyond the context while training (default 2)', minimum=0),
        Option('extra_max', 'most target points beyond the context while training (default 9)', minimum=0),
        Option('max_points', 'at most this many points per training task in all (default: no bound)',
               optional=True),
        Option('random_kernel', 'draw each task\'s kernel: lengthscale U[0.1, 0.6], scale U[0.1, 1] (the attentive '
               'NP notebook\'s; default: lengthscale 0.4, scale 1)', bool, default=False),
        Option('eval_targets', 'held-out target points per validation and test task (default 50)'),
    ),
    # Garnelo et al.'s CNP notebook: 3 to 9 context points and 2 to 9 more targets, lengthscale 0.4, scale 1.
    defaults=dict(context_min=3, context_max=9, extra_min=2, extra_max=9, eval_targets=50),
    load=_load, check=_check))
