"""`jmeta.nn.max_pool` against `flax.linen.max_pool`: values, gradients, odd sizes, batch dimensions, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmeta.nn import max_pool

def values_and_grads(f, x, weights=None):
  """`f(x)` and the gradient of `sum(f(x) * weights)` (of `sum(f(x))` without weights), in one program (eagerly, each
  op compiled a program of its own); XLA's default optimisation, under which a max-pool gradient bug once showed."""
  total = lambda x: jnp.sum(f(x) * weights) if weights is not None else jnp.sum(f(x))
  return jax.jit(lambda x: (f(x), jax.grad(total)(x)))(x)


def distinct(shape, seed=0):
  """Values with no ties in any window, where both poolings have the same gradient."""
  rng = np.random.default_rng(seed)
  return rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0


@pytest.mark.parametrize('shape, window', [
    ((3, 8, 8, 4), 2), ((3, 7, 9, 2), 2), ((2, 5, 5, 1), (2, 3)), ((4, 6, 3), (3,)), ((2, 3, 6, 6, 2), 3),
])
def test_equals_flax_max_pool(shape, window):
  with jax.enable_x64():
    x = distinct(shape)
    w = (window, window) if isinstance(window, int) else window
    flat = x.reshape((-1,) + x.shape[x.ndim - len(w) - 1:])
    ref = lambda x: nn.max_pool(x.reshape(flat.shape), w, strides=w, padding='VALID')
    shape = jax.eval_shape(ref, x).shape
    ours = lambda x: max_pool(x, window).reshape(shape)
    weights = distinct(shape, seed=1)
    (ours_value, ours_grad), (ref_value, ref_grad) = (values_and_grads(f, x, weights) for f in (ours, ref))
    np.testing.assert_array_equal(ours_value, ref_value)
    np.testing.assert_array_equal(ours_grad, ref_grad)


def test_ties_go_to_the_first_element_as_in_flax():
  x = np.asarray([[[[1.0], [3.0], [2.0]], [[3.0], [3.0], [0.0]]]], np.float32)  # [1, 2, 3, 1]: a tie at 3 in window 1
  ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
  (ours_value, ours_grad), (ref_value, ref_grad) = (values_and_grads(f, x) for f in (lambda x: max_pool(x, 2), ref))
  np.testing.assert_array_equal(ours_value, ref_value)
  np.testing.assert_array_equal(ours_grad, ref_grad)
  np.testing.assert_array_equal(np.asarray(ours_grad)[0, :, :2, 0], [[0.0, 1.0], [0.0, 0.0]])


def test_nan_propagates():
  x = jnp.asarray([[[[1.0], [jnp.nan]], [[2.0], [0.0]]]])
  assert jnp.isnan(max_pool(x, 2)).all()


def test_maml_second_order_through_pooling_matches_finite_differences():
  """Under `jit` and `vmap` over two tasks, the derivative of `jnp.max` (which finds the maximum again by equality)
  lost part of this meta-gradient (23% off at these shapes); the pool's selection by index must not."""
  from jax.flatten_util import ravel_pytree

  from jmeta import algorithms, losses
  from jmeta.models import conv4
  from jmeta.tasks import Split, Task
  with jax.enable_x64():
    rng = np.random.default_rng(1)
    labels = np.tile(np.arange(5), (2, 1))
    task = Task(Split(rng.normal(size=(2, 5, 4, 4, 3)), labels), Split(rng.normal(size=(2, 5, 4, 4, 3)), labels))
    model = conv4.functional(conv4.Classifier(conv4.conv4_protonet(4, blocks=1), 5))
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), jax.jit(model.init)(jax.random.PRNGKey(1),
                                                                                     task.support.x[0]))
    learner = algorithms.maml(model.apply, 0.4, 1, loss_fn=losses.cross_entropy)
    loss = jax.jit(lambda p: jnp.mean(jax.vmap(lambda t: learner.loss(p, t)[0])(task)))
    flat, unravel = ravel_pytree(params)
    direction = jax.random.normal(jax.random.PRNGKey(3), flat.shape, jnp.float64)
    grad = ravel_pytree(jax.jit(jax.grad(loss))(params))[0] @ direction
    loss_at = jax.jit(lambda f: loss(unravel(f)))  # unravel's slices in the program, not op by op
    fds = [(loss_at(flat + e * direction) - loss_at(flat - e * direction)) / (2 * e) for e in (1e-5, 1e-6)]
    np.testing.assert_allclose(fds[0], fds[1], rtol=1e-6)  # the differences have converged
    np.testing.assert_allclose(grad, fds[1], rtol=1e-6)


def test_too_small_input_raises():
  with pytest.raises(ValueError, match='cannot pool a 1x4 feature map with a 2x2 window'):
    max_pool(jnp.zeros((1, 1, 4, 3)), 2)
  with pytest.raises(ValueError, match='needs inputs'):
    max_pool(jnp.zeros((4, 4)), 2)
