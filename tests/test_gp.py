"""Gaussian-process regression tasks: the kernel by hand, the sample covariance, and the masks' counts and layout."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scipy import stats

import jmeta
from jmeta.datasets import (gp_functions, gp_joint_log_likelihood, gp_log_likelihood, gp_predictive, gp_sample,
                            rbf_kernel, task_kernel)
from jmeta.tasks import Split



def test_rbf_kernel_by_hand():
  x1, x2 = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [-1.0]])
  got = rbf_kernel(x1, x2, lengthscale=0.5, scale=2.0)
  d2 = np.array([[0, 4, 1], [1, 1, 4]], np.float32)
  np.testing.assert_allclose(got, 4 * np.exp(-d2 / (2 * 0.25)), rtol=1e-6)


def test_sample_covariance_matches_the_kernel():
  x = jnp.array([[-1.5], [-1.0], [-0.8], [0.0], [0.3], [1.9]])
  draws = 20_000
  ys = jax.jit(jax.vmap(lambda k: gp_sample(k, x)[:, 0]))(jax.random.split(jax.random.PRNGKey(0), draws))
  ys = np.asarray(ys, np.float64)
  want = np.asarray(rbf_kernel(x, x), np.float64) + 2e-2 ** 2 * np.eye(6)
  got = ys.T @ ys / draws  # the mean is zero
  # Var of the estimate (1/N) sum y_i y_j of a Gaussian is (K_ii K_jj + K_ij^2) / N; allow 4.5 standard errors.
  se = np.sqrt((np.outer(np.diag(want), np.diag(want)) + want ** 2) / draws)
  assert np.all(np.abs(got - want) < 4.5 * se), np.max(np.abs(got - want) / se)
  assert np.abs(ys.mean(0)).max() < 4.5 / np.sqrt(draws)


def test_masks_count_the_drawn_points_and_targets_contain_the_context():
  sample = gp_functions()  # context 3..9, extra 2..9
  keys = jax.random.split(jax.random.PRNGKey(1), 2000)
  tasks = jax.jit(jax.vmap(sample))(keys)
  jmeta.check_meta_batch(tasks, jmeta.task_spec(jax.eval_shape(sample, keys[0])))
  assert tasks.support.x.shape == (2000, 9, 1) and tasks.query.x.shape == (2000, 18, 1)
  n_context = np.asarray(tasks.support.mask).sum(1)
  n_extra = np.asarray(tasks.query.mask)[:, 9:].sum(1)
  assert set(n_context) == set(range(3, 10)) and set(n_extra) == set(range(2, 10))
  # Real points form a prefix of each block; the query's context block is the support set.
  np.testing.assert_array_equal(tasks.support.mask, np.arange(9) < n_context[:, None])
  np.testing.assert_array_equal(np.asarray(tasks.query.mask)[:, 9:], np.arange(9) < n_extra[:, None])
  np.testing.assert_array_equal(np.asarray(tasks.query.mask)[:, :9], tasks.support.mask)
  np.testing.assert_array_equal(np.asarray(tasks.query.x)[:, :9], tasks.support.x)
  x = np.asarray(tasks.query.x)
  assert -2 <= x.min() and x.max() <= 2 and np.isfinite(np.asarray(tasks.query.y)).all()
  # y is the documented gp_sample of the task's x.
  documented = jax.jit(lambda key, x: gp_sample(jax.random.split(key, 4)[1], x))
  for i in range(3):
    np.testing.assert_allclose(tasks.query.y[i], documented(keys[i], tasks.query.x[i]), rtol=1e-4, atol=1e-5)


def test_fixed_counts_separate_targets_and_vmap_equals_loop():
  sample = gp_functions(4, 6, targets_include_context=False, x_range=(0.0, 1.0))
  keys = jax.random.split(jax.random.PRNGKey(2), 3)
  batch = jax.tree.map(np.asarray, jax.jit(jax.vmap(sample))(keys))
  assert batch.support.x.shape == (3, 4, 1) and batch.query.x.shape == (3, 6, 1)
  assert np.asarray(batch.support.mask).all() and np.asarray(batch.query.mask).all()
  one = jax.jit(sample)  # the loop's body, compiled once
  for i, key in enumerate(keys):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6), batch, one(key))


def test_a_dense_grid_of_400_points_factorises_in_float32():
  x = jnp.linspace(-2, 2, 400)[:, None]
  assert np.isfinite(np.asarray(jax.jit(gp_sample)(jax.random.PRNGKey(0), x))).all()


@pytest.mark.parametrize('kwargs, message', [
    (dict(context=(0, 3)), r'context must be an integer >= 1 or a range \(low, high\) .* got \(0, 3\)'),
    (dict(context=(5, 4)), r'1 <= low <= high; got \(5, 4\)'),
    (dict(extra=-1), r'extra must be an integer >= 0 .* got -1'),
    (dict(extra=0, targets_include_context=False), 'extra must allow at least one target point'),
    (dict(lengthscale=0.0), 'lengthscale must be a positive finite number; got 0.0'),
    (dict(x_range=(1.0, 1.0)), r'x_range must be \(low, high\) with low < high'),
    (dict(scale=(1.0, 0.5)), r'scale must be a positive number or a range \(low, high\) with 0 < low <= high'),
    (dict(context=(3, 9), extra=(2, 9), max_points=10), r'max_points must be an integer >= .* \(9 \+ 2\); got 10'),
])
def test_invalid_arguments_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    gp_functions(**kwargs)


def _numpy_kernel(a, b, lengthscale, scale):
  return scale ** 2 * np.exp(-0.5 * (a[:, None, 0] - b[None, :, 0]) ** 2 / lengthscale ** 2)


def test_exact_gp_predictive_against_numpy_and_scipy_with_padding():
  rng = np.random.default_rng(0)
  kernel = dict(lengthscale=0.3, scale=0.8, noise=0.05)
  xc, xt = rng.uniform(-2, 2, (5, 1)), rng.uniform(-2, 2, (4, 1))
  # Context and targets drawn jointly from the GP, so the figures are typical ones.
  x = np.concatenate([xc, xt])
  cov = _numpy_kernel(x, x, 0.3, 0.8) + 0.05 ** 2 * np.eye(9)
  y = rng.multivariate_normal(np.zeros(9), cov)[:, None]
  yc, yt = y[:5], y[5:]
  # The independent reference: the conditional Gaussian in NumPy, and SciPy's densities.
  a = _numpy_kernel(xc, xc, 0.3, 0.8) + 0.05 ** 2 * np.eye(5)
  cross = _numpy_kernel(xt, xc, 0.3, 0.8)
  mean = cross @ np.linalg.solve(a, yc)
  post = _numpy_kernel(xt, xt, 0.3, 0.8) + 0.05 ** 2 * np.eye(4) - cross @ np.linalg.solve(a, cross.T)
  per_point = stats.norm.logpdf(yt[:, 0], mean[:, 0], np.sqrt(np.diag(post)))
  joint = stats.multivariate_normal(np.zeros(9), cov).logpdf(y[:, 0]) - stats.multivariate_normal(
      np.zeros(5), a).logpdf(yc[:, 0])
  # Padding: junk rows (mask False) in the middle of the context, and one at the end of the targets.
  context = Split(np.insert(xc, [1, 3], 9.0, axis=0), np.insert(yc, [1, 3], -7.0, axis=0),
                  np.insert(np.ones(5, bool), [1, 3], False))
  targets = Split(np.concatenate([xt, [[0.1]]]), np.concatenate([yt, [[40.0]]]), np.array([True] * 4 + [False]))
  with jax.enable_x64(True):
    context, targets = jax.tree.map(jnp.asarray, (context, targets))

    @jax.jit
    def ours(context, targets):
      return (gp_predictive(context, targets.x, **kernel), gp_log_likelihood(context, targets, **kernel),
              gp_joint_log_likelihood(context, targets, **kernel), gp_joint_log_likelihood(
                  context, Split(targets.x[:4], targets.y[:4]), **kernel),
              gp_log_likelihood(context._replace(mask=jnp.zeros(7, bool)), targets, **kernel))

    (got_mean, got_std), got_per_point, got_joint, unpadded_joint, no_context = ours(context, targets)
  np.testing.assert_allclose(got_mean[:4], mean, rtol=1e-9)
  np.testing.assert_allclose(got_std[:4, 0], np.sqrt(np.diag(post)), rtol=1e-9)
  np.testing.assert_allclose(got_per_point[:4], per_point, rtol=1e-9)
  np.testing.assert_allclose([got_joint, unpadded_joint], joint, rtol=1e-9)
  # With every context point masked, the prior: N(0, scale^2 + noise^2).
  np.testing.assert_allclose(no_context[:4], stats.norm.logpdf(yt[:, 0], 0, np.sqrt(0.8 ** 2 + 0.05 ** 2)),
                             rtol=1e-9)


def test_random_kernels_and_a_bound_on_the_points():
  sample = gp_functions((3, 49), (0, 46), max_points=49, lengthscale=(0.1, 0.6), scale=(0.1, 1.0))
  keys = jax.random.split(jax.random.PRNGKey(3), 500)
  tasks, kernels = jax.jit(jax.vmap(lambda k: (sample(k), task_kernel(k, lengthscale=(0.1, 0.6),
                                                                      scale=(0.1, 1.0)))))(keys)
  lengthscale, scale = np.asarray(kernels.lengthscale), np.asarray(kernels.scale)
  assert 0.1 <= lengthscale.min() < 0.15 and 0.55 < lengthscale.max() <= 0.6
  assert 0.1 <= scale.min() < 0.15 and 0.95 < scale.max() <= 1.0
  total = np.asarray(tasks.query.mask).sum(1)
  assert total.max() == 49 and np.asarray(tasks.support.mask).sum(1).min() == 3
  # Each task's y is the documented draw with its own kernel: its spread follows its scale.
  documented = jax.jit(lambda key, x, lengthscale, scale: gp_sample(jax.random.split(key, 4)[1], x,
                                                                    lengthscale=lengthscale, scale=scale))
  for i in range(2):
    y = documented(keys[i], tasks.query.x[i], lengthscale[i], scale[i])
    np.testing.assert_allclose(tasks.query.y[i], y, rtol=1e-4, atol=1e-5)
  rms = np.sqrt(np.mean(np.asarray(tasks.query.y) ** 2, axis=(1, 2)))
  assert np.corrcoef(rms, scale)[0, 1] > 0.8
