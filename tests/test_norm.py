"""jmeta.nn.BatchNorm against flax.linen.BatchNorm (values and derivatives to second order, in float64), NumPy in
float32 where the mean dwarfs the spread, and a Python loop under vmap."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmeta import nn as jnn


def _flax(x, params, mask):
  module = nn.BatchNorm(use_running_average=False, use_fast_variance=False)
  return module.apply({'params': params}, x, mask=mask, mutable=['batch_stats'])[0]


def _ours(x, params, mask):
  return jnn.BatchNorm().apply({'params': params}, x, mask=mask)


def test_equals_flax_batch_norm_to_second_order():
  """Outputs, forward mode, gradients, reverse-over-reverse (MAML) and forward-over-reverse (iMAML's
  Hessian-vector products) equal Flax's, without a mask, with an example mask and with a per-feature mask."""
  with jax.enable_x64():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = 3.0 + 2.0 * jax.random.normal(keys[0], (6, 5, 4, 3), jnp.float64)
    params = {'scale': 1 + 0.3 * jax.random.normal(keys[1], (3,), jnp.float64),
              'bias': 0.3 * jax.random.normal(keys[2], (3,), jnp.float64)}
    tangent = jax.tree.map(lambda a: jax.random.normal(keys[3], a.shape, a.dtype), (params, x))
    masks = (None, jnp.array([1, 1, 0, 1, 0, 0], bool).reshape(6, 1, 1, 1),
             jnp.array([[1, 0, 1]] * 3 + [[1, 1, 0]] * 3, bool).reshape(6, 1, 1, 3))

    @jax.jit  # every case and both sides in one program
    def everything(params, x, tangent):
      out = []
      for mask in masks:
        for norm in (_ours, _flax):
          f = lambda p, x: jnp.sum(jnp.sin(norm(x, p, mask)) * jnp.arange(1, 4))
          grad = jax.grad(f, (0, 1))
          second = jax.grad(lambda p, x: sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grad(p, x))), (0, 1))
          hvp = jax.jvp(grad, (params, x), tangent)[1]
          forward = jax.jvp(lambda p, x: norm(x, p, mask), (params, x), tangent)
          out.append((forward, grad(params, x), second(params, x), hvp))
      return out

    results = everything(params, x, tangent)
    for case in range(len(masks)):
      ours, theirs = results[2 * case], results[2 * case + 1]
      chex.assert_trees_all_close(ours, theirs, rtol=1e-9, atol=1e-11)
    # A mask changes the statistics (else the masked cases test nothing).
    assert not np.allclose(results[0][0], results[2][0])


def test_precise_when_the_mean_dwarfs_the_spread():
  """float32 features with mean 1e4 and spread 1: normalised to unit spread, as NumPy in float64 says, where the
  one-pass E[x^2] - E[x]^2 loses every digit."""
  rng = np.random.default_rng(0)
  x = (1e4 + rng.standard_normal((64, 8, 8, 4))).astype(np.float32)
  params = {'scale': jnp.ones(4), 'bias': jnp.zeros(4)}
  y = np.asarray(jax.jit(_ours)(x, params, None))
  x64 = x.astype(np.float64)
  expected = (x64 - x64.mean((0, 1, 2))) / np.sqrt(x64.var((0, 1, 2)) + 1e-5)
  np.testing.assert_allclose(y, expected, atol=2e-3)
  naive_var = np.mean(x * x, (0, 1, 2)) - np.mean(x, (0, 1, 2)) ** 2  # float32, one pass, unshifted
  assert np.max(np.abs(naive_var / x64.var((0, 1, 2)) - 1)) > 0.1


def test_params_are_flax_batch_norms():
  """Same names, shapes, dtypes and initial values as Flax's, so saved params load in either."""
  x = jnp.ones((2, 3, 3, 5))
  ours = jnn.BatchNorm().init(jax.random.PRNGKey(0), x)
  theirs = nn.BatchNorm(use_running_average=False).init(jax.random.PRNGKey(0), x)
  chex.assert_trees_all_equal(ours['params'], theirs['params'])
  chex.assert_trees_all_equal_dtypes(ours['params'], theirs['params'])


def test_vmap_equals_a_loop_and_dtype_is_kept():
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  x = jax.random.normal(keys[0], (3, 5, 7))
  params = {'scale': jax.random.normal(keys[1], (3, 7)), 'bias': jax.random.normal(keys[2], (3, 7))}
  norm = lambda x, p: jnn.batch_norm(x, p['scale'], p['bias'])  # noqa: E731
  batched = jax.jit(jax.vmap(norm))(x, params)
  looped = jnp.stack([norm(x[i], jax.tree.map(lambda a: a[i], params)) for i in range(3)])
  chex.assert_trees_all_close(batched, looped, atol=1e-5)
  half = jnn.batch_norm(x[0].astype(jnp.bfloat16), params['scale'][0].astype(jnp.bfloat16),
                        params['bias'][0].astype(jnp.bfloat16))
  assert half.dtype == jnp.bfloat16


@pytest.mark.parametrize('args, message', [
    ((jnp.ones(4), jnp.ones(4), jnp.zeros(4)), 'batch and a feature axis'),
    ((jnp.ones((2, 4)), jnp.ones(3), jnp.zeros(3)), r'must be \[4\]'),
    ((jnp.ones((2, 4)), jnp.ones(4), jnp.zeros(4), jnp.ones(3, bool)), 'does not broadcast'),
])
def test_rejects_bad_shapes(args, message):
  with pytest.raises(ValueError, match=message):
    jnn.batch_norm(*args)
