"""Function-regression tasks: 1-D functions drawn from a Gaussian process, with context and target points.

A function-regression task is a `jmeta.Task`: the context points are its support set and the target points its
query set, each padded to a fixed size with a mask (`jmeta.Split.mask`) so that the number of points can vary per
task under `jax.jit` and `jax.vmap`. A neural process's `adapt` encodes the real context points, a MAML learner takes
its inner steps on them, and both are scored on the real target points, from the same tasks.
"""

from __future__ import annotations

import numbers
from typing import Callable

import jax
import jax.numpy as jnp

from jmeta.checks import check_positive_number
from jmeta.tasks import Split, Task


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


def gp_functions(
    context: int | tuple[int, int] = (3, 9),
    extra: int | tuple[int, int] = (2, 9),
    *,
    lengthscale: float = 0.4,
    scale: float = 1.0,
    noise: float = 2e-2,
    x_range: tuple[float, float] = (-2.0, 2.0),
    targets_include_context: bool = True,
) -> Callable[[jax.Array], Task]:
  """A sampler of Gaussian-process regression tasks: `sample(key) -> Task` with masked splits, pure and jittable.

  Each task draws `x` uniform on `x_range` and one function from `gp_sample` at those points, then a number of
  context points uniform on `context` and of extra target points uniform on `extra` (both inclusive ranges; an int
  fixes the number). The defaults are the settings of DeepMind's conditional neural process notebook (Garnelo et
  al., 2018, arXiv:1807.01613; also the 1-D experiments of Garnelo et al., 2018, arXiv:1807.01622): lengthscale 0.4,
  scale 1, diagonal noise 2e-2, `x` in [-2, 2], 3 to 9 context points and 2 to 9 more targets, the targets
  including the context points (`MAX_CONTEXT_POINTS = 10` there). The attentive NP notebook (Kim et al., 2019,
  arXiv:1901.05761) uses up to 50 points: `context=(3, 49), extra=(0, 49)`.

  Layout, fixed whatever the counts: the support set (context) is the first `max_context` points with mask
  `arange(max_context) < n_context`; the query set (targets) is all `max_context + max_extra` points with the
  context's mask followed by `arange(max_extra) < n_extra`, or, with `targets_include_context=False`, the last
  `max_extra` points alone. `y` at the task's points is `gp_sample(jax.random.split(key, 4)[1], x, ...)`.

  Returns:
    `sample(key) -> Task` with `x`, `y` `[points, 1]` float32 and bool masks `[points]`.

  Raises:
    ValueError: for count ranges that are not integers with `1 <= low <= high` (`0 <= low` for `extra`), a
      non-positive lengthscale, scale or noise, or an empty `x_range`.
  """
  c_low, c_high = _count_range(context, 'context', 1)
  e_low, e_high = _count_range(extra, 'extra', 0)
  if not targets_include_context and e_high == 0:
    raise ValueError('extra must allow at least one target point when targets_include_context=False; got '
                     f'{extra!r}')
  kernel = dict(lengthscale=check_positive_number(lengthscale, 'lengthscale'),
                scale=check_positive_number(scale, 'scale'), noise=check_positive_number(noise, 'noise'))
  low, high = x_range
  if not low < high:
    raise ValueError(f'x_range must be (low, high) with low < high; got {x_range!r}')

  def sample(key: jax.Array) -> Task:
    key_x, key_y, key_c, key_e = jax.random.split(key, 4)
    x = jax.random.uniform(key_x, (c_high + e_high, 1), minval=low, maxval=high)
    y = gp_sample(key_y, x, **kernel)
    n_context = jax.random.randint(key_c, (), c_low, c_high + 1)
    n_extra = jax.random.randint(key_e, (), e_low, e_high + 1)
    context_mask = jnp.arange(c_high) < n_context
    extra_mask = jnp.arange(e_high) < n_extra
    support = Split(x[:c_high], y[:c_high], context_mask)
    if targets_include_context:
      return Task(support, Split(x, y, jnp.concatenate([context_mask, extra_mask])))
    return Task(support, Split(x[c_high:], y[c_high:], extra_mask))

  return sample
