"""`jmeta.nn.max_pool` against `flax.linen.max_pool`: values, gradients, odd sizes, batch dimensions, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmeta.nn import max_pool


def distinct(shape, seed=0):
  """Values with no ties in any window, where both poolings have the same gradient."""
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0, jnp.float64)


@pytest.mark.parametrize('shape, window', [
    ((3, 8, 8, 4), 2), ((3, 7, 9, 2), 2), ((2, 5, 5, 1), (2, 3)), ((4, 6, 3), (3,)), ((2, 3, 6, 6, 2), 3),
])
def test_equals_flax_max_pool(shape, window):
  with jax.enable_x64():
    x = distinct(shape)
    w = (window, window) if isinstance(window, int) else window
    flat = x.reshape((-1,) + x.shape[x.ndim - len(w) - 1:])
    ref = lambda x: nn.max_pool(x.reshape(flat.shape), w, strides=w, padding='VALID')
    ours = lambda x: max_pool(x, window).reshape(ref(x).shape)
    np.testing.assert_array_equal(ours(x), ref(x))
    weights = distinct(ref(x).shape, seed=1)
    g = lambda f: jax.grad(lambda x: jnp.sum(f(x) * weights))(x)
    np.testing.assert_array_equal(g(ours), g(ref))


def test_ties_split_the_gradient():
  x = jnp.ones((1, 2, 2, 1))
  np.testing.assert_allclose(jax.grad(lambda x: max_pool(x, 2).sum())(x), jnp.full(x.shape, 0.25))


def test_too_small_input_raises():
  with pytest.raises(ValueError, match='cannot pool a 1x4 feature map with a 2x2 window'):
    max_pool(jnp.zeros((1, 1, 4, 3)), 2)
  with pytest.raises(ValueError, match='needs inputs'):
    max_pool(jnp.zeros((4, 4)), 2)
