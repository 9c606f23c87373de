"""`jmeta.nn.Conv` against `flax.linen.Conv`: values, first- and second-order gradients, vmap, both impls."""

import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmeta.nn import Conv, conv, resolve_impl
from jmeta.nn.conv import SMALL_CIN

IMPLS = ('im2col', 'xla')
# (input shape, kernel size, strides, padding, use_bias); odd sizes, both im2col patch layouts (channels
# <= SMALL_CIN take the channel-major one), stride 1 and 2, SAME / VALID / explicit, with and without bias.
CASES = [
    ((2, 9, 7, 1), (3, 3), 1, 'SAME', True),
    ((2, 9, 7, 1), (3, 3), 2, 'SAME', False),
    ((3, 8, 11, 5), (3, 3), 2, 'SAME', True),
    ((3, 8, 11, 5), (3, 3), 1, 'VALID', False),
    ((2, 7, 9, 6), (3, 2), (2, 1), 'VALID', True),
    ((2, 7, 9, 3), (2, 3), 2, ((1, 2), (0, 1)), True),
    ((2, 7, 9, 6), (5, 3), 1, 2, False),
]
assert any(c[0][-1] <= SMALL_CIN for c in CASES) and any(c[0][-1] > SMALL_CIN for c in CASES)


def _normal(rng, shape, dtype):
  return jnp.asarray(rng.standard_normal(shape) * 0.5, dtype)  # numpy's: jax.random would compile per shape


def _pair(case, impl, features=4, dtype=jnp.float32, seed=0, tasks=None):
  """Flax's Conv, ours, random params (nonzero bias) shaped as Flax's init makes them, and inputs."""
  shape, kernel_size, strides, padding, use_bias = case
  rng = np.random.default_rng(seed)
  x = _normal(rng, shape, dtype)
  ref = nn.Conv(features, kernel_size, strides=strides, padding=padding, use_bias=use_bias, param_dtype=dtype)
  ours = Conv(features, kernel_size, strides=strides, padding=padding, use_bias=use_bias, param_dtype=dtype,
              impl=impl)
  lead = () if tasks is None else (tasks,)
  params = jax.tree.map(lambda s: _normal(rng, lead + s.shape, dtype), jax.eval_shape(ref.init, jax.random.key(0), x))
  return ref, ours, params, x


def _loss(model):
  return lambda params, x: jnp.sum(jnp.sin(model.apply(params, x)))


def _inner_outer(model):
  """Outputs, first-order gradients w.r.t. params and inputs, and the meta-gradient of one inner SGD step."""
  loss = _loss(model)

  def meta_loss(p, x):
    g = jax.grad(loss)(p, x)
    fast = jax.tree.map(lambda a, b: a - 0.1 * b, p, g)
    return loss(fast, x + 1.0)

  return jax.jit(lambda p, x: (model.apply(p, x), jax.grad(loss, argnums=(0, 1))(p, x), jax.grad(meta_loss)(p, x)))


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('case', CASES)
def test_values_gradients_and_second_order_gradients_equal_flax(case, impl):
  ref, ours, params, x = _pair(case, impl)
  chex.assert_trees_all_equal_shapes_and_dtypes(jax.eval_shape(ours.init, jax.random.key(3), x), params)
  want = jax.jit(ref.apply)(params, x)
  chex.assert_trees_all_close(jax.jit(ours.apply)(params, x), want, atol=2e-5, rtol=2e-5)
  with jax.enable_x64(True):
    ref, ours, params, x = _pair(case, impl, dtype=jnp.float64)
    want = _inner_outer(ref)(params, x)
    got = _inner_outer(ours)(params, x)
    chex.assert_trees_all_close(got, want, atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize('impl', IMPLS)
def test_forward_mode_and_hessian_equal_flax(impl):
  with jax.enable_x64(True):
    ref, ours, params, x = _pair(CASES[2], impl, features=2, dtype=jnp.float64)
    kernel = params['params']['kernel']

    def f(model):
      return lambda k: _loss(model)({'params': {**params['params'], 'kernel': k}}, x)

    def jvp_and_hessian(model):
      tangent = jnp.ones_like(kernel)
      return jax.jit(lambda k: (jax.jvp(f(model), (k,), (tangent,)), jax.hessian(f(model))(k)))(kernel)

    chex.assert_trees_all_close(jvp_and_hessian(ours), jvp_and_hessian(ref), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('case', [CASES[1], CASES[2]])
def test_vmap_with_per_task_weights_equals_a_python_loop(case, impl):
  tasks = 3
  _, ours, per_task, x = _pair(case, impl, tasks=tasks)
  xs = jnp.stack([x + i for i in range(tasks)])
  got = jax.jit(jax.vmap(ours.apply))(per_task, xs)
  one, one_grad = jax.jit(ours.apply), jax.jit(jax.grad(_loss(ours)))
  want = jnp.stack([one(jax.tree.map(lambda a: a[i], per_task), xs[i]) for i in range(tasks)])
  chex.assert_trees_all_close(got, want, atol=2e-5, rtol=2e-5)
  grads = jax.jit(jax.vmap(jax.grad(_loss(ours))))(per_task, xs)
  for i in range(tasks):
    want_i = one_grad(jax.tree.map(lambda a: a[i], per_task), xs[i])
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], grads), want_i, atol=1e-4, rtol=1e-4)


def test_impls_agree_and_extra_batch_dims_and_unbatched_inputs_work():
  rng = np.random.default_rng(0)
  x, kernel = _normal(rng, (2, 3, 9, 7, 6), jnp.float32), _normal(rng, (3, 3, 6, 5), jnp.float32)
  f = jax.jit(conv, static_argnames=('strides', 'padding', 'impl'))
  a = f(x, kernel, 2, 'SAME', impl='im2col')
  b = f(x, kernel, 2, 'SAME', impl='xla')
  chex.assert_shape(a, (2, 3, 5, 4, 5))
  chex.assert_trees_all_close(a, b, atol=2e-5, rtol=2e-5)
  chex.assert_trees_all_close(f(x[0, 0], kernel, 2, impl='im2col'), b[0, 0], atol=2e-5, rtol=2e-5)
  chex.assert_trees_all_close(f(x, kernel, 2, impl='auto'), b, atol=2e-5, rtol=2e-5)


def test_one_and_three_dimensional_windows_equal_flax():
  for shape, kernel_size, padding in [((2, 10, 3), 3, 'CAUSAL'), ((2, 10, 7), (4,), 'VALID'),
                                      ((1, 5, 6, 7, 2), (2, 3, 2), 'SAME')]:
    for impl in IMPLS:
      ref, ours, params, x = _pair((shape, kernel_size, 2, padding, True), impl)
      chex.assert_trees_all_close(jax.jit(ours.apply)(params, x), jax.jit(ref.apply)(params, x), atol=2e-5,
                                  rtol=2e-5)
      chex.assert_trees_all_close(jax.jit(jax.grad(_loss(ours), argnums=(0, 1)))(params, x),
                                  jax.jit(jax.grad(_loss(ref), argnums=(0, 1)))(params, x), atol=1e-4, rtol=1e-4)


def _conv_dim_labels(compiled) -> list[str]:
  return re.findall(r'convolution\(.*dim_labels=([^,\s]+)', compiled.as_text())


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason="XLA:CPU's convolution canonicalization")
@pytest.mark.parametrize('case', [CASES[2], CASES[3]])
def test_xla_impl_gradients_inside_a_scan_are_canonical_convolutions(case):
  # XLA:CPU runs a convolution fast only in the canonical layout [b, spatial, f] x [spatial, i, o] -> [b, spatial,
  # f], and canonicalizes the others only outside loops, so a gradient step in a scan body must emit that layout.
  ref, ours, params, x = _pair(case, 'xla')

  def train(model):
    grad = jax.grad(_loss(model), argnums=(0, 1))

    def body(carry, _):
      p, v = carry
      gp, gv = grad(p, v)
      return (jax.tree.map(lambda a, b: a - 0.01 * b, p, gp), v - 0.01 * gv), None

    return jax.jit(lambda p, v: jax.lax.scan(body, (p, v), None, length=2)[0])

  labels = _conv_dim_labels(train(ours).lower(params, x).compile())
  assert len(labels) == 3 and set(labels) == {'b01f_01io->b01f'}, labels
  chex.assert_trees_all_close(train(ours)(params, x), train(ref)(params, x), atol=1e-4, rtol=1e-4)


def test_impl_resolution():
  assert resolve_impl('auto') == ('im2col' if jax.default_backend() == 'cpu' else 'xla')
  assert resolve_impl('xla') == 'xla'
  with pytest.raises(ValueError, match='impl'):
    resolve_impl('cudnn')
  with pytest.raises(ValueError, match='features'):
    conv(jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 2, 4)))
