"""Tests of jmeta.models.conv4: output shapes, BatchNorm's two modes, the classifier head, the conv attribute."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jmeta.models import conv4

KEY = jax.random.key(0, impl='rbg')  # compiles faster on CPU than the default threefry


def images(n, seed=0):
  """`[n, 28, 28, 1]` in NumPy, whose slicing and concatenation compile nothing."""
  return np.random.default_rng(seed).normal(size=(n, 28, 28, 1)).astype(np.float32)


def out_shape(module, x):
  f = conv4.functional(module)
  params = jax.eval_shape(f.init, KEY, x)
  return jax.eval_shape(f.apply, params, x).shape


@pytest.mark.parametrize('module, shape', [
    (conv4.conv4_maml(), (5, 2 * 2 * 64)),
    (conv4.conv4_protonet(), (5, 64)),
    (conv4.conv4_relation(), (5, 5, 5, 64)),
    (conv4.conv4_relation(padding='SAME'), (5, 7, 7, 64)),
    (conv4.conv4_maml(filters=16, blocks=3), (5, 4 * 4 * 16)),
    (conv4.conv4_protonet(filters=32, blocks=2), (5, 7 * 7 * 32)),
    (conv4.Classifier(conv4.conv4_maml(), ways=5), (5, 5)),
])
def test_output_shapes(module, shape):
  assert out_shape(module, images(5)) == shape


def test_maml_and_protonet_forms():
  maml, proto = conv4.conv4_maml(), conv4.conv4_protonet()
  assert (maml.strides, maml.pool_blocks, maml.filters, maml.blocks) == (2, 0, 64, 4)
  assert (proto.strides, proto.pool_blocks, proto.filters, proto.blocks) == (1, 4, 64, 4)


def test_rejects_non_nhwc():
  with pytest.raises(ValueError, match='NHWC'):
    out_shape(conv4.conv4_maml(), jnp.zeros((5, 28, 28)))


@pytest.fixture(scope='module')
def small():
  f = conv4.functional(conv4.conv4_protonet(filters=8))
  params = jax.jit(f.init)(KEY, images(2))
  return f, params, jax.jit(f.apply)


def test_params_hold_weights_only(small):
  _, params, _ = small
  assert set(params) == {f'block{i}' for i in range(4)}
  assert set(params['block0']) == {'conv', 'norm'}
  assert set(params['block0']['norm']) == {'scale', 'bias'}


# Batches of 4 with references of 4 throughout, so that these tests share their programs.

def test_batch_statistics_are_transductive(small):
  _, params, apply = small
  x = images(7)
  a = apply(params, x[:4])
  b = apply(params, np.concatenate([x[:1], x[4:7]]))
  assert not np.allclose(a[0], b[0], atol=1e-4), 'the output of one example should depend on the others'


def test_support_statistics_do_not_depend_on_the_query_batch(small):
  _, params, apply = small
  x, support = images(7), images(4, seed=1)
  a = apply(params, x[:4], reference=support)
  b = apply(params, np.concatenate([x[:1], x[4:7]]), reference=support)
  alone = apply(params, x[:1], reference=support)
  chex.assert_trees_all_close(a[0], b[0], atol=1e-5)
  chex.assert_trees_all_close(a[0], alone[0], atol=1e-5)
  other = apply(params, x[:4], reference=images(4, seed=2))
  assert not np.allclose(a[0], other[0], atol=1e-4), 'the output should depend on the reference'


def test_reference_equal_to_the_batch_gives_batch_statistics(small):
  _, params, apply = small
  x = images(4)
  chex.assert_trees_all_close(apply(params, x, reference=x), apply(params, x), atol=1e-5)


def test_batch_norm_matches_a_numpy_reference():
  f = conv4.functional(conv4.Conv4(filters=3, blocks=1, strides=1, pool_blocks=0, flatten=False))
  x, sup = images(5), slice(1, 4)
  params = jax.jit(f.init)(KEY, x)
  params['block0']['norm'] = {'scale': jnp.array([1., 2., .5]), 'bias': jnp.array([0., 1., -1.])}
  # One program for Flax's conv and both normalisations (eagerly, each op compiled one of its own).
  conv, batch, support = jax.jit(lambda p, x: (
      nn.Conv(3, (3, 3), padding='SAME').apply({'params': p['block0']['conv']}, x), f.apply(p, x),
      f.apply(p, x, reference=x[sup])))(params, x)
  c = np.asarray(conv, np.float64)
  expected = {}
  for name, stats_of in (('batch', slice(None)), ('support', sup)):
    out = np.zeros_like(c)
    for ch in range(3):
      values = c[stats_of, :, :, ch]
      mean, var = values.mean(), ((values - values.mean()) ** 2).mean()
      scale, bias = [1., 2., .5][ch], [0., 1., -1.][ch]
      out[..., ch] = np.maximum((c[..., ch] - mean) / np.sqrt(var + 1e-5) * scale + bias, 0)
    expected[name] = out
  np.testing.assert_allclose(batch, expected['batch'], atol=1e-4)
  np.testing.assert_allclose(support, expected['support'], atol=1e-4)


def test_classifier_head_is_under_head_key():
  f = conv4.functional(conv4.Classifier(conv4.conv4_maml(filters=8), ways=5))
  params = jax.eval_shape(f.init, KEY, images(2))
  assert set(params) == {'encoder', 'head'}
  assert params['head']['kernel'].shape == (2 * 2 * 8, 5)
  assert params['head']['bias'].shape == (5,)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  head = [p for p in paths if 'head' in p]
  assert sorted(head) == ["['head']['bias']", "['head']['kernel']"]


def test_conv_class_is_replaceable():

  class NoBiasConv(nn.Conv):
    use_bias: bool = False

  for module in (conv4.conv4_maml(filters=8, conv=NoBiasConv), conv4.conv4_protonet(filters=8, conv=NoBiasConv)):
    params = jax.eval_shape(conv4.functional(module).init, KEY, images(2))
    assert set(params['block3']['conv']) == {'kernel'}


def test_maml_style_use_vmap_jit_and_grad():
  f = conv4.functional(conv4.Classifier(conv4.Conv4(filters=4, blocks=2), ways=3))
  params = jax.jit(f.init)(KEY, images(2))
  x = images(2 * 6).reshape(2, 6, 28, 28, 1)
  y = np.array([[0, 1, 2, 0, 1, 2], [2, 2, 1, 1, 0, 0]])

  def loss(p, x, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(f.apply(p, x), y))

  @jax.jit  # the vmapped loss, the loop it must equal and a gradient in one program
  def run(p, x, y):
    looped = jnp.stack([loss(p, x[i], y[i]) for i in range(2)])
    return jax.vmap(loss, in_axes=(None, 0, 0))(p, x, y), looped, jax.grad(loss)(p, x[0], y[0])

  batched, looped, grads = run(params, x, y)
  chex.assert_trees_all_close(batched, looped, atol=1e-5)
  chex.assert_tree_all_finite(grads)
  assert float(np.abs(grads['head']['kernel']).sum()) > 0


@pytest.mark.parametrize('form', ['maml', 'protonet', 'relation'])
def test_default_layers_equal_flax_conv_and_max_pool(form):
  """conv4's fast layers (jmeta.nn.Conv, reshape max-pool) against `flax.linen.Conv` and `nn.max_pool`, in
  float64: the same params give the same outputs and the same second-order gradients."""

  class FlaxBlock(conv4.ConvBlock):

    @nn.compact
    def __call__(self, x, *, mask=None):
      x = nn.Conv(self.features, (3, 3), strides=self.strides, padding=self.padding, name='conv')(x)
      x = nn.relu(nn.BatchNorm(use_running_average=False, use_fast_variance=False, name='norm')(x))
      return nn.max_pool(x, (2, 2), strides=(2, 2)) if self.pool else x

  # Fewer blocks than four where blocks repeat, each kind of block still composed with another: compile time in
  # float64 grows with the blocks (Relation's three cover its 'VALID' pooled and 'SAME' unpooled blocks).
  blocks = {'maml': 2, 'protonet': 2, 'relation': 3}[form]
  make = functools.partial({'maml': conv4.conv4_maml, 'protonet': conv4.conv4_protonet,
                            'relation': conv4.conv4_relation}[form], filters=4, blocks=blocks)
  with jax.enable_x64():
    x = images(6).astype(jnp.float64)
    fast = conv4.functional(make())
    params = jax.jit(lambda k, x: jax.tree.map(lambda p: p.astype(jnp.float64), fast.init(k, x)))(KEY, x)

    def reference(p, x):
      module = make()
      out = x
      for i, padding in enumerate((module.padding,) * blocks if isinstance(module.padding, str) else module.padding):
        block = FlaxBlock(4, module.strides, padding, i < module.pool_blocks)
        out = block.apply({'params': p[f'block{i}']}, out, mutable=['batch_stats'])[0]
      return out.reshape(out.shape[0], -1) if module.flatten else out

    @jax.jit  # both sides in one program: one compile, not four
    def values_and_second_order_gradients(p, x):
      out = []
      for apply in (fast.apply, reference):
        inner = lambda p: jnp.sum(jnp.sin(apply(p, x[:3])))
        outer = lambda p: jnp.sum(jnp.cos(apply(jax.tree.map(lambda a, g: a - 0.1 * g, p, jax.grad(inner)(p)), x)))
        out.append((apply(p, x), jax.grad(outer)(p)))
      return out

    (fast_value, fast_grads), (ref_value, ref_grads) = values_and_second_order_gradients(params, x)
    np.testing.assert_allclose(fast_value, ref_value, rtol=1e-10, atol=1e-10)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10), fast_grads, ref_grads)
