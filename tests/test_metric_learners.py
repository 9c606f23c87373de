"""Tests of the metric learners against hand-computed cases and loop-based NumPy reimplementations."""

import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from jmeta.algorithms.matching import matching_net
from jmeta.algorithms.protonet import protonet
from jmeta.algorithms.relation import RelationModule, relation_net
from jmeta.algorithms.siamese import siamese_net
from jmeta.models import conv4
from jmeta.tasks import Split, Task

KEY = jax.random.key(0, impl='rbg')  # compiles faster on CPU than the default threefry
IN, DIM = 4, 3


def identity(params, x):
  del params
  return x


def linear(params, x):
  return x @ params['w']


def centred(params, x, reference=None):
  """A linear embedding after subtracting the batch mean (of `reference` when given), like BatchNorm."""
  ref = x if reference is None else reference
  return (x - jnp.mean(ref, axis=0)) @ params['w']


def maps(params, x, reference=None):
  """`[n, IN] -> [n, 1, 1, DIM]` feature maps for the relation network."""
  return centred(params, x, reference)[:, None, None, :]


class LinearRelation(nn.Module):
  """sigmoid(w . [query, class] + b) on `[pairs, 1, 1, 2C]`; simple enough to recompute by hand."""

  @nn.compact
  def __call__(self, x, *, mask=None):
    del mask
    return nn.sigmoid(nn.Dense(1, name='fc')(x.reshape(x.shape[0], -1)))[:, 0]


def sigmoid(v):
  return 1 / (1 + math.exp(-v))


def softplus(v):
  return math.log1p(math.exp(v))


def random_task(seed, ways=3, shots=2, queries=4, dim=IN):
  rng = np.random.default_rng(seed)
  sy = np.repeat(np.arange(ways), shots)
  qy = rng.integers(0, ways, queries)
  centres = rng.normal(size=(ways, dim))
  return Task(Split(jnp.asarray(centres[sy] + 0.5 * rng.normal(size=(len(sy), dim)), jnp.float32), jnp.asarray(sy)),
              Split(jnp.asarray(centres[qy] + 0.5 * rng.normal(size=(queries, dim)), jnp.float32), jnp.asarray(qy)))


def meta_batch(tasks):
  return jax.tree.map(lambda *a: np.stack(a), *tasks)


def model_params(seed=1):
  return {'w': jnp.asarray(np.random.default_rng(seed).normal(size=(IN, DIM)) / 2, jnp.float32)}


def make(name, embed=linear, transductive=True):
  if name == 'relation':
    return relation_net(maps, 3, (1, 1, DIM), relation_module=LinearRelation(), transductive=transductive)
  return {
      'protonet': lambda: protonet(embed, 3, transductive=transductive),
      'matching': lambda: matching_net(embed, 3, transductive=transductive),
      'matching_fce': lambda: matching_net(embed, 3, fce=True, embed_dim=DIM, fce_steps=3, transductive=transductive),
      'matching_scaled': lambda: matching_net(embed, 3, scale=4.0, learn_scale=True, transductive=transductive),
      'siamese': lambda: siamese_net(embed, 3, DIM, transductive=transductive),
  }[name]()


@functools.lru_cache(maxsize=None)
def initial_params(name):
  return jax.jit(make(name).init)(jax.random.key(2, impl='rbg'), model_params())


def by_hand(learner, params, task):
  """`adapt`'s state, `predict`'s scores of the queries and `loss`'s (value, metrics), in one program."""

  @jax.jit
  def run(params, task):
    state = learner.adapt(params, task.support)
    return state, learner.predict(state, task.query.x), learner.loss(params, task)

  return run(params, task)


@functools.lru_cache(maxsize=None)
def get(name, embed=linear, transductive=True):
  """A learner on `embed` (the relation network always embeds with `maps`) and its initial params."""
  return make(name, embed, transductive), initial_params(name)


# Hand-computed cases.

def test_protonet_by_hand():
  # Prototypes [1, 0] and [0, 2]; the query [1, 1] is at squared distances 1 and 2.
  task = Task(Split(jnp.array([[0., 0.], [2., 0.], [0., 2.]]), jnp.array([0, 0, 1])),
              Split(jnp.array([[1., 1.]]), jnp.array([0])))
  state, scores, (loss, metrics) = by_hand(protonet(identity, 2), {'embed': None}, task)
  np.testing.assert_allclose(state.prototypes, [[1., 0.], [0., 2.]])
  np.testing.assert_allclose(scores, [[-1., -2.]])
  np.testing.assert_allclose(loss, -math.log(math.exp(-1) / (math.exp(-1) + math.exp(-2))), rtol=1e-6)
  assert float(metrics['accuracy']) == 1.0


def test_matching_by_hand():
  # Cosine similarities 1 and 0 to the two support examples: attention e / (e + 1) on class 0.
  task = Task(Split(jnp.array([[2., 0.], [0., 3.]]), jnp.array([0, 1])), Split(jnp.array([[1., 0.]]), jnp.array([1])))
  _, scores, (loss, metrics) = by_hand(matching_net(identity, 2), {'embed': None}, task)
  p0 = math.e / (math.e + 1)
  np.testing.assert_allclose(scores, [[math.log(p0), math.log(1 - p0)]], rtol=1e-6)
  np.testing.assert_allclose(loss, -math.log(1 - p0), rtol=1e-6)
  assert float(metrics['accuracy']) == 0.0


def test_matching_scale_by_hand():
  # Cosines 1 and 0 scaled by 3: attention e^3 / (e^3 + 1) on class 0; d loss / d log_scale = 3 * p0 (1 - 0).
  task = Task(Split(jnp.array([[2., 0.], [0., 3.]]), jnp.array([0, 1])), Split(jnp.array([[1., 0.]]), jnp.array([1])))
  p0 = math.exp(3) / (math.exp(3) + 1)
  fixed = matching_net(identity, 2, scale=3.0)
  learned = matching_net(identity, 2, scale=3.0, learn_scale=True)
  params = jax.jit(learned.init)(KEY, None)
  np.testing.assert_allclose(params['log_scale'], math.log(3.0), rtol=1e-6)
  fixed_loss, learned_loss, (grads, _) = jax.jit(lambda p, t: (fixed.loss({'embed': None}, t)[0],
                                                               learned.loss(p, t)[0], learned.meta_grad(p, t)))(
                                                                   params, task)
  np.testing.assert_allclose(fixed_loss, -math.log(1 - p0), rtol=1e-6)
  np.testing.assert_allclose(learned_loss, -math.log(1 - p0), rtol=1e-6)
  # loss = -log(1 - p0) with p0 = sigmoid(s), s = exp(log_scale): d/d log_scale = p0 * s.
  np.testing.assert_allclose(grads['log_scale'], p0 * 3.0, rtol=1e-5)
  with pytest.raises(ValueError, match='scale must be positive'):
    matching_net(identity, 2, scale=0.0)


def test_relation_by_hand():
  # Class sums 1 + 2 = 3 and 4; pairs [1, 3] and [1, 4] scored by sigmoid(0.5 q - 0.25 c).
  task = Task(Split(jnp.array([[1.], [2.], [4.]]), jnp.array([0, 0, 1])), Split(jnp.array([[1.]]), jnp.array([1])))
  learner = relation_net(lambda p, x: x[:, None, None, :], 2, (1, 1, 1), relation_module=LinearRelation())
  params = jax.eval_shape(learner.init, KEY, None)  # every leaf is set below
  params['relation'] = {'fc': {'kernel': np.array([[0.5], [-0.25]], np.float32), 'bias': np.zeros(1, np.float32)}}
  s0, s1 = sigmoid(0.5 - 0.75), sigmoid(0.5 - 1.0)
  _, scores, (loss, metrics) = by_hand(learner, params, task)
  np.testing.assert_allclose(scores, [[s0, s1]], rtol=1e-6)
  np.testing.assert_allclose(loss, (s0 ** 2 + (s1 - 1) ** 2) / 2, rtol=1e-6)
  assert float(metrics['accuracy']) == 0.0


@pytest.mark.parametrize('balanced', [True, False])
def test_siamese_by_hand(balanced):
  # Logits 1 - |0.5 - s| = 0.5, -0.5, -1.5 for supports 0, 2, 3; only the first pair is same-class.
  task = Task(Split(jnp.array([[0.], [2.], [3.]]), jnp.array([0, 1, 1])), Split(jnp.array([[0.5]]), jnp.array([0])))
  learner = siamese_net(identity, 2, 1, balanced=balanced)
  params = {'embed': None, 'alpha': jnp.array([-1.]), 'bias': jnp.array(1.)}
  _, scores, (loss, metrics) = by_hand(learner, params, task)
  np.testing.assert_allclose(scores, [[0.5, -0.5]])
  same, diff = softplus(-0.5), [softplus(-0.5), softplus(-1.5)]
  expected = (same + sum(diff) / 2) / 2 if balanced else (same + sum(diff)) / 3
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert float(metrics['accuracy']) == 1.0 and float(metrics['pair_accuracy']) == 1.0


# Loop-based NumPy reimplementations on random tasks.

def np_protonet(w, task, ways):
  zs, zq = np.asarray(task.support.x, np.float64) @ w, np.asarray(task.query.x, np.float64) @ w
  protos = []
  for k in range(ways):
    members = [zs[i] for i in range(len(zs)) if task.support.y[i] == k]
    protos.append(sum(members) / len(members))
  total = 0.0
  for q in range(len(zq)):
    logits = [-sum((zq[q][j] - p[j]) ** 2 for j in range(len(p))) for p in protos]
    total += math.log(sum(math.exp(l) for l in logits)) - logits[int(task.query.y[q])]
  return total / len(zq)


def np_cos(a, b):
  return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def np_lstm(p, c, h, x):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  gate = lambda n: x @ p['i' + n]['kernel'] + h @ p['h' + n]['kernel'] + p['h' + n]['bias']
  sig = lambda v: 1 / (1 + np.exp(-v))
  i, f, g, o = sig(gate('i')), sig(gate('f')), np.tanh(gate('g')), sig(gate('o'))
  c = f * c + i * g
  return c, o * np.tanh(c)


def np_matching(params, task, ways, fce_steps=None):
  scale = math.exp(float(params['log_scale'])) if 'log_scale' in params else 1.0
  w = np.asarray(params['embed']['w'], np.float64)
  g, f = np.asarray(task.support.x, np.float64) @ w, np.asarray(task.query.x, np.float64) @ w
  n, d = g.shape
  if fce_steps:
    fwd, bwd = [], [None] * n
    c = h = np.zeros(d)
    for i in range(n):
      c, h = np_lstm(params['fce']['forward'], c, h, g[i])
      fwd.append(h)
    c = h = np.zeros(d)
    for i in reversed(range(n)):
      c, h = np_lstm(params['fce']['backward'], c, h, g[i])
      bwd[i] = h
    g = np.stack([fwd[i] + bwd[i] + g[i] for i in range(n)])
    queries = []
    for q in f:
      c, h = np.zeros(d), q
      for _ in range(fce_steps):
        att = np.exp(g @ h) / np.exp(g @ h).sum()
        read = sum(att[i] * g[i] for i in range(n))
        c, h_hat = np_lstm(params['fce']['attention'], c, h, np.concatenate([q, read]))
        h = h_hat + q
      queries.append(h)
    f = np.stack(queries)
  total = 0.0
  for q in range(len(f)):
    e = [math.exp(scale * np_cos(f[q], g[i])) for i in range(n)]
    p = sum(e[i] for i in range(n) if task.support.y[i] == task.query.y[q]) / sum(e)
    total -= math.log(p)
  return total / len(f)


def np_relation(params, task, ways):
  w = np.asarray(params['embed']['w'], np.float64)
  kernel, bias = (np.asarray(params['relation']['fc'][k], np.float64) for k in ('kernel', 'bias'))
  sx, qx = np.asarray(task.support.x, np.float64), np.asarray(task.query.x, np.float64)
  zs, zq = (sx - sx.mean(0)) @ w, (qx - qx.mean(0)) @ w
  total = 0.0
  for q in range(len(zq)):
    for k in range(ways):
      summed = sum(zs[i] for i in range(len(zs)) if task.support.y[i] == k)
      score = 1 / (1 + math.exp(-(np.concatenate([zq[q], summed]) @ kernel[:, 0] + bias[0])))
      total += (score - (1.0 if task.query.y[q] == k else 0.0)) ** 2
  return total / (len(zq) * ways)


def np_siamese(params, task, balanced):
  w, alpha = np.asarray(params['embed']['w'], np.float64), np.asarray(params['alpha'], np.float64)
  zs, zq = np.asarray(task.support.x, np.float64) @ w, np.asarray(task.query.x, np.float64) @ w
  same, diff = [], []
  for q in range(len(zq)):
    for i in range(len(zs)):
      logit = sum(alpha[j] * abs(zq[q][j] - zs[i][j]) for j in range(len(alpha))) + float(params['bias'])
      if task.query.y[q] == task.support.y[i]:
        same.append(softplus(-logit))
      else:
        diff.append(softplus(logit))
  if balanced:
    return (sum(same) / len(same) + sum(diff) / len(diff)) / 2
  return (sum(same) + sum(diff)) / (len(same) + len(diff))


@pytest.mark.parametrize('seed', [0, 1])
def test_against_numpy(seed):
  task = random_task(seed, ways=3, shots=2)
  loss = lambda name: jax.jit(get(name)[0].loss)(get(name)[1], task)[0]
  params = {name: get(name)[1] for name in NAMES}
  np.testing.assert_allclose(loss('protonet'), np_protonet(np.asarray(params['protonet']['embed']['w']), task, 3),
                             rtol=1e-4)
  np.testing.assert_allclose(loss('matching'), np_matching(params['matching'], task, 3), rtol=1e-4)
  np.testing.assert_allclose(loss('matching_fce'), np_matching(params['matching_fce'], task, 3, fce_steps=3),
                             rtol=1e-4)
  np.testing.assert_allclose(loss('matching_scaled'), np_matching(params['matching_scaled'], task, 3), rtol=1e-4)
  np.testing.assert_allclose(loss('relation'), np_relation(params['relation'], task, 3), rtol=1e-4)
  np.testing.assert_allclose(loss('siamese'), np_siamese(params['siamese'], task, balanced=True), rtol=1e-4)
  unbalanced = jax.jit(siamese_net(linear, 3, DIM, balanced=False).loss)(params['siamese'], task)[0]
  np.testing.assert_allclose(unbalanced, np_siamese(params['siamese'], task, balanced=False), rtol=1e-4)


def test_unequal_shots_and_unsorted_support():
  support_x = jnp.asarray(np.random.default_rng(3).normal(size=(5, IN)), jnp.float32)
  task = Task(Split(support_x, jnp.array([2, 0, 1, 0, 0])), random_task(3).query)
  learner, params = get('protonet')
  np.testing.assert_allclose(jax.jit(learner.loss)(params, task)[0],
                             np_protonet(np.asarray(params['embed']['w']), task, 3), rtol=1e-4)
  learner, params = get('matching_fce')
  np.testing.assert_allclose(jax.jit(learner.loss)(params, task)[0], np_matching(params, task, 3, fce_steps=3),
                             rtol=1e-4)


# Transformations.

NAMES = ['protonet', 'matching', 'matching_fce', 'matching_scaled', 'siamese', 'relation']


@pytest.mark.parametrize('name', NAMES)
def test_vmap_matches_loop_and_jit_matches_eager(name):
  learner, params = get(name)
  tasks = [random_task(s) for s in range(2)]
  batched = jax.jit(jax.vmap(learner.loss, in_axes=(None, 0)))(params, meta_batch(tasks))
  looped = [learner.loss(params, t) for t in tasks]
  chex.assert_trees_all_close(batched, meta_batch(looped), rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(jax.jit(learner.loss)(params, tasks[0]), looped[0], rtol=1e-5, atol=1e-6)
  assert set(looped[0][1]) >= {'loss', 'accuracy'}


@pytest.mark.parametrize('name', NAMES)
def test_gradients_finite_and_match_finite_differences(name):
  """In float64, on a 3-way task whose support lacks class 2 (an empty prototype, an unattended class...)."""
  learner, params = get(name)
  task = random_task(4)
  task = task._replace(support=task.support._replace(y=jnp.array([0, 0, 1, 1, 0, 1])))
  with jax.enable_x64(True):
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    task = jax.tree.map(lambda a: np.asarray(a, np.float64) if a.dtype == np.float32 else np.asarray(a), task)
    loss = lambda p: learner.loss(p, task)[0]

    @jax.jit  # the gradient and central differences (step 1e-5) along three random directions in one program
    def gradient_and_differences(params, directions):
      flat, unravel = ravel_pytree(params)
      central = lambda d: (loss(unravel(flat + 1e-5 * d)) - loss(unravel(flat - 1e-5 * d))) / 2e-5
      return jax.grad(loss)(params), jax.vmap(central)(directions)

    directions = np.random.default_rng(0).normal(size=(3, ravel_pytree(params)[0].size))
    grads, differences = gradient_and_differences(params, directions)
    chex.assert_trees_all_equal_structs(grads, params)
    chex.assert_tree_all_finite(grads)
    assert float(np.abs(grads['embed']['w']).sum()) > 0
    # check_grads's test in float64, along three directions rather than its one
    np.testing.assert_allclose(directions @ np.asarray(ravel_pytree(grads)[0]), differences, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', NAMES)
def test_non_transductive_queries_do_not_depend_on_each_other(name):
  task = random_task(6)
  rest = random_task(7).query.x
  for transductive in (True, False):
    learner, params = get(name, centred, transductive)
    predict = jax.jit(learner.predict)
    state = jax.jit(learner.adapt)(params, task.support)
    together = np.asarray(predict(state, task.query.x))
    mixed = np.asarray(predict(state, np.concatenate([task.query.x[:1], rest[1:]])))
    assert together.shape == (4, 3)
    if transductive:
      assert not np.allclose(together[0], mixed[0], atol=1e-4)
    else:
      chex.assert_trees_all_close(together[0], mixed[0], atol=1e-5)


# Errors.

@pytest.mark.parametrize('name', NAMES)
def test_mismatches_raise(name):
  learner, params = get(name)
  task = random_task(8)
  bad = {
      'labels out of range for ways': task._replace(query=task.query._replace(y=task.query.y.at[0].set(3))),
      'one-hot labels': task._replace(support=task.support._replace(y=jax.nn.one_hot(task.support.y, 3))),
      'float labels': task._replace(query=task.query._replace(y=task.query.y.astype(jnp.float32))),
      'fewer support examples than ways': task._replace(support=Split(task.support.x[:2], task.support.y[:2])),
      'x and y disagree': task._replace(query=Split(task.query.x[:3], task.query.y)),
      'input shapes disagree': task._replace(query=task.query._replace(x=task.query.x[:, :2])),
  }
  for what, t in bad.items():
    with pytest.raises(ValueError):
      learner.loss(params, t)
    if what != 'labels out of range for ways':
      with pytest.raises(ValueError):
        jax.jit(learner.loss)(params, t)


def test_embedding_shape_mismatches_raise():
  task = random_task(9)

  def loss(learner):
    params = jax.eval_shape(learner.init, KEY, None)
    return jax.eval_shape(learner.loss, params, task)

  with pytest.raises(ValueError, match='embed_fn'):
    loss(protonet(lambda p, x: x[:, None, :], 3))
  with pytest.raises(ValueError, match='embed_fn'):
    loss(siamese_net(identity, 3, IN + 1))
  with pytest.raises(ValueError, match='embed_fn'):
    loss(matching_net(identity, 3, fce=True, embed_dim=IN + 1))
  with pytest.raises(ValueError, match='embed_fn'):
    loss(relation_net(lambda p, x: x[:, None, None, :], 3, (1, 1, IN + 1), relation_module=LinearRelation()))
  for bad_ways in (0, 2.5, None):
    with pytest.raises(ValueError, match='ways'):
      protonet(identity, bad_ways)
  with pytest.raises(ValueError, match='embed_dim'):
    matching_net(identity, 3, fce=True)


# With the conv4 encoders.

def test_with_conv4_encoders():
  x = np.random.default_rng(0).normal(size=(12, 28, 28, 1)).astype(np.float32)
  y = np.array([0, 1, 2, 0, 1, 2], np.int32)
  task = Task(Split(x[:6], y), Split(x[6:], y[::-1]))
  enc = conv4.functional(conv4.conv4_protonet(filters=4, blocks=2))
  learner = protonet(enc.apply, 3, transductive=False)
  loss, metrics = jax.jit(learner.loss)(jax.jit(lambda k: learner.init(k, enc.init(k, x)))(KEY), task)
  chex.assert_tree_all_finite((loss, metrics))
  rel = conv4.functional(conv4.conv4_relation(filters=4, blocks=2))
  learner = relation_net(rel.apply, 3, (5, 5, 4), relation_module=RelationModule(filters=4, hidden=3))
  params = jax.jit(lambda k: learner.init(k, rel.init(k, x)))(KEY)
  assert jax.tree.map(jnp.shape, params['relation'])['fc1']['kernel'] == (4, 3)
  scores = jax.jit(lambda p, t: learner.predict(learner.adapt(p, t.support), t.query.x))(params, task)
  assert scores.shape == (6, 3) and bool(np.all((np.asarray(scores) > 0) & (np.asarray(scores) < 1)))


def test_default_relation_module_shapes():
  f = conv4.functional(RelationModule())
  pairs = jnp.zeros((6, 5, 5, 128))
  params = jax.eval_shape(f.init, KEY, pairs)
  assert params['fc1']['kernel'].shape == (64, 8) and params['fc2']['kernel'].shape == (8, 1)
  assert jax.eval_shape(f.apply, params, pairs).shape == (6,)


def test_protonet_learns_separable_tasks():
  """Smoke check: 5-way 1-shot tasks of Gaussian classes in 16 dimensions, of which only the first 4 separate the
  classes; a linear embedding learns to ignore the 12 noise dimensions."""
  ways, dim, queries = 5, 16, 3
  rng = np.random.default_rng(0)
  scale = np.concatenate([np.full(4, 0.3), np.full(dim - 4, 3.0)])

  def sample(tasks):
    centres = np.zeros((tasks, ways, dim))
    centres[..., :4] = 2 * rng.normal(size=(tasks, ways, 4))
    sy, qy = np.arange(ways), np.tile(np.arange(ways), queries)
    sx = centres + scale * rng.normal(size=(tasks, ways, dim))
    qx = centres[:, qy] + scale * rng.normal(size=(tasks, ways * queries, dim))
    return Task(Split(sx.astype(np.float32), np.broadcast_to(sy, (tasks, ways)).astype(np.int32)),
                Split(qx.astype(np.float32), np.broadcast_to(qy, (tasks, ways * queries)).astype(np.int32)))

  steps, tasks_per_step = 300, 16
  train_tasks = jax.tree.map(lambda a: a.reshape((steps, tasks_per_step) + a.shape[1:]), sample(steps * tasks_per_step))
  test_tasks = sample(200)
  learner = protonet(linear, ways)
  params = jax.jit(learner.init)(KEY, {'w': (np.eye(dim, 8) + 0.1 * rng.normal(size=(dim, 8))).astype(np.float32)})
  opt = optax.adam(1e-2)

  @jax.jit
  def accuracy(params):
    return jnp.mean(jax.vmap(learner.loss, in_axes=(None, 0))(params, test_tasks)[1]['accuracy'])

  @jax.jit
  def train(params):
    def step(carry, tasks):
      params, state = carry
      grads = jax.tree.map(lambda g: g.mean(0), jax.vmap(learner.meta_grad, in_axes=(None, 0))(params, tasks)[0])
      updates, state = opt.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None
    return jax.lax.scan(step, (params, opt.init(params)), train_tasks)[0][0]

  before, after = float(accuracy(params)), float(accuracy(train(params)))
  assert after > before + 0.2 and after > 0.85, (before, after)
