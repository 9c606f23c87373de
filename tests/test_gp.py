"""Gaussian-process regression tasks: the kernel by hand, the sample covariance, and the masks' counts and layout."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.datasets import gp_functions, gp_sample, rbf_kernel

quick_jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})


def test_rbf_kernel_by_hand():
  x1, x2 = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0], [-1.0]])
  got = rbf_kernel(x1, x2, lengthscale=0.5, scale=2.0)
  d2 = np.array([[0, 4, 1], [1, 1, 4]], np.float32)
  np.testing.assert_allclose(got, 4 * np.exp(-d2 / (2 * 0.25)), rtol=1e-6)


def test_sample_covariance_matches_the_kernel():
  x = jnp.array([[-1.5], [-1.0], [-0.8], [0.0], [0.3], [1.9]])
  draws = 20_000
  ys = quick_jit(jax.vmap(lambda k: gp_sample(k, x)[:, 0]))(jax.random.split(jax.random.PRNGKey(0), draws))
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
  tasks = quick_jit(jax.vmap(sample))(keys)
  jmeta.check_meta_batch(tasks, jmeta.task_spec(sample(keys[0])))
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
  for i in range(3):
    y = gp_sample(jax.random.split(keys[i], 4)[1], tasks.query.x[i])
    np.testing.assert_allclose(tasks.query.y[i], y, rtol=1e-4, atol=1e-5)


def test_fixed_counts_separate_targets_and_vmap_equals_loop():
  sample = gp_functions(4, 6, targets_include_context=False, x_range=(0.0, 1.0))
  keys = jax.random.split(jax.random.PRNGKey(2), 3)
  batch = quick_jit(jax.vmap(sample))(keys)
  assert batch.support.x.shape == (3, 4, 1) and batch.query.x.shape == (3, 6, 1)
  assert np.asarray(batch.support.mask).all() and np.asarray(batch.query.mask).all()
  for i, key in enumerate(keys):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6), batch, sample(key))


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
])
def test_invalid_arguments_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    gp_functions(**kwargs)
