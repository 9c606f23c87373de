"""The MAML family against independent references: finite differences, hand-written inner loops, formulas."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmeta
from helpers import meta_batch, mlp_apply, mlp_params, regression_task



def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def _numpy(tree):
  """The tree's leaves as NumPy arrays, so that indexing and arithmetic on them compile nothing."""
  return jax.tree.map(np.asarray, tree)


def _init_state(learner, opt, key, params):
  return jax.jit(lambda k, p: jmeta.init_state(learner, opt, k, p))(key, params)


@pytest.mark.parametrize('steps', [2, 3])
def test_second_order_meta_gradient_matches_float64_finite_differences(steps):
  with jax.enable_x64(True):
    params = mlp_params(jax.random.PRNGKey(0), (1, 6, 6, 1), jnp.float64)
    task = regression_task(jax.random.PRNGKey(1), dtype=jnp.float64)
    learner = jmeta.maml(mlp_apply, inner_opt=0.1, steps=steps)
    @jax.jit  # the meta-gradient and its finite differences in one program
    def meta_grad_and_finite_differences(params):
      flat, unravel = jax.flatten_util.ravel_pytree(params)
      loss = lambda f: learner.loss(unravel(f), task)[0]
      eps = 1e-6
      basis = jnp.eye(flat.size, dtype=jnp.float64)
      fd = jax.vmap(lambda e: (loss(flat + eps * e) - loss(flat - eps * e)) / (2 * eps))(basis)
      return learner.meta_grad(params, task)[0], fd

    grads, fd = meta_grad_and_finite_differences(params)
    grads, fd = _flat(grads), np.asarray(fd)
    rel = float(np.linalg.norm(grads - fd) / np.linalg.norm(fd))
    assert rel < 1e-5, rel


def test_first_order_equals_stop_gradient_reference_and_differs_from_second_order():
  params = mlp_params(jax.random.PRNGKey(0))
  task = regression_task(jax.random.PRNGKey(1))
  lr, steps = 0.1, 3

  def support_loss(p):
    return jnp.mean((mlp_apply(p, task.support.x) - task.support.y) ** 2)

  def reference(p):
    for _ in range(steps):
      g = jax.lax.stop_gradient(jax.grad(support_loss)(p))
      p = jax.tree.map(lambda a, b: a - lr * b, p, g)
    return jnp.mean((mlp_apply(p, task.query.x) - task.query.y) ** 2)

  first, want, second = jax.jit(lambda p: (jmeta.fomaml(mlp_apply, lr, steps).meta_grad(p, task)[0],
                                           jax.grad(reference)(p),
                                           jmeta.maml(mlp_apply, lr, steps).meta_grad(p, task)[0]))(params)
  chex.assert_trees_all_close(first, want, rtol=1e-5, atol=1e-6)
  assert float(np.linalg.norm(_flat(first) - _flat(second))) > 1e-3 * float(np.linalg.norm(_flat(second)))


def test_maml_inner_loop_equals_hand_written_sgd():
  params = mlp_params(jax.random.PRNGKey(2))
  task = regression_task(jax.random.PRNGKey(3))


  @jax.jit
  def sgd_step(p):
    g = jax.grad(lambda q: jnp.mean((mlp_apply(q, task.support.x) - task.support.y) ** 2))(p)
    return jax.tree.map(lambda a, b: a - 0.05 * b, p, g)

  p = params
  for _ in range(4):
    p = sgd_step(p)
  chex.assert_trees_all_close(jax.jit(jmeta.maml(mlp_apply, 0.05, 4).adapt)(params, task.support), p, rtol=1e-5,
                              atol=1e-6)


@pytest.mark.parametrize('make', [
    lambda: jmeta.maml(mlp_apply, 0.1, 2),
    lambda: jmeta.fomaml(mlp_apply, 0.1, 2),
    lambda: jmeta.metasgd(mlp_apply, 2),
    lambda: jmeta.anil(mlp_apply, jmeta.path_mask('head'), 0.1, 2),
    lambda: jmeta.reptile(mlp_apply, 0.1, 3),
    lambda: jmeta.pretrained(mlp_apply, 0.1, 2),
], ids=['maml', 'fomaml', 'metasgd', 'anil', 'reptile', 'pretrained'])
def test_vmap_over_tasks_equals_python_loop_and_jit_equals_eager(make):
  learner = make()
  params = jax.jit(learner.init)(jax.random.PRNGKey(9), mlp_params(jax.random.PRNGKey(0)))
  batch = meta_batch(jax.random.PRNGKey(1), tasks=5)
  grads, metrics = jax.vmap(learner.meta_grad, in_axes=(None, 0))(params, batch)  # eager: the point of the test
  per_task = jax.jit(learner.meta_grad)
  numpy_batch, numpy_grads, numpy_metrics = _numpy((batch, grads, metrics))
  for i in range(5):
    task = jax.tree.map(lambda a: a[i], numpy_batch)
    g, m = per_task(params, task)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], numpy_grads), g, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], numpy_metrics), m, rtol=1e-5, atol=1e-6)
  jitted = jax.jit(jax.vmap(learner.meta_grad, in_axes=(None, 0)))(params, batch)
  chex.assert_trees_all_close(jitted, (grads, metrics), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope='module')
def three_tasks():
  """A one-step MAML, SGD 0.5, its initial state, a batch of 3 tasks and the mean of their meta-gradients."""
  learner, opt = jmeta.maml(mlp_apply, 0.1, 1), optax.sgd(0.5)
  params = mlp_params(jax.random.PRNGKey(0))
  batch = meta_batch(jax.random.PRNGKey(1), tasks=3)
  state = _init_state(learner, opt, jax.random.PRNGKey(2), params)
  meta_grad = jax.jit(learner.meta_grad)
  numpy_batch = _numpy(batch)
  per_task = [_numpy(meta_grad(params, jax.tree.map(lambda a: a[i], numpy_batch))[0]) for i in range(3)]
  return learner, opt, _numpy(params), batch, state, jax.tree.map(lambda *g: sum(g) / 3, *per_task)


@pytest.mark.parametrize('vmap_size', [None, 1, 2, 5])  # 2: chunks of 2 and a remainder of 1
def test_meta_step_on_a_batch_equals_mean_of_per_task_gradients(three_tasks, vmap_size):
  learner, opt, params, batch, state, mean = three_tasks
  new_state, metrics = jax.jit(jmeta.meta_step(learner, opt, vmap_size=vmap_size))(state, batch)
  chex.assert_trees_all_close(new_state.params, jax.tree.map(lambda p, g: p - 0.5 * g, params, mean),
                              rtol=1e-5, atol=1e-6)
  assert int(new_state.step) == 1 and set(metrics) >= {'loss', 'grad_norm'}


def test_meta_step_vmap_size_must_be_a_positive_integer():
  with pytest.raises(ValueError, match='vmap_size must be an integer >= 1; got 0'):
    jmeta.meta_step(jmeta.maml(mlp_apply, 0.1, 1), optax.sgd(0.1), vmap_size=0)


def test_reptile_update_matches_formula_on_hand_computed_case():
  apply = lambda p, x: x * p['w']
  data = [(np.array([[1.0], [2.0]]), np.array([[2.0], [4.0]])), (np.array([[1.0], [1.0]]), np.array([[-1.0], [-1.0]]))]
  batch = jmeta.Task(jmeta.Split(jnp.array([d[0] for d in data]), jnp.array([d[1] for d in data])),
                     jmeta.Split(jnp.array([d[0] for d in data]), jnp.array([d[1] for d in data])))
  # Task 1: grad of mean((w x - y)^2) at w=0 is 2 mean(x (0 - y)) = -10, so w' = 0 + 0.1 * 10 = 1.
  # Task 2: the gradient is 2 mean(1 * (0 + 1)) = 2, so w' = -0.2. Mean displacement (w - w') = (-1 + 0.2) / 2.
  learner = jmeta.reptile(apply, 0.1, 1, use_query=False)
  opt = optax.sgd(0.5)
  state = _init_state(learner, opt, jax.random.PRNGKey(0), {'w': jnp.zeros(())})
  state, _ = jax.jit(jmeta.meta_step(learner, opt))(state, batch)
  np.testing.assert_allclose(state.params['w'], 0.0 - 0.5 * (-1.0 + 0.2) / 2, rtol=1e-6)


def test_inner_loop_takes_one_minibatch_per_step_by_hand():
  # SGD 0.25 on (p - b)^2 over b = 1, 2, 3 from p = 0: p = 0.5, 1.25, 2.125; losses 1, 2.25, 3.0625.
  loss = lambda p, b: (p - b) ** 2
  adapted, losses = jmeta.inner.inner_loop(loss, jnp.zeros(()), optax.sgd(0.25), 3, batches=jnp.array([1., 2., 3.]))
  np.testing.assert_allclose(adapted, 2.125)
  np.testing.assert_allclose(losses, [1.0, 2.25, 3.0625])
  with pytest.raises(ValueError, match='leading axis of 4'):
    jmeta.inner.inner_loop(loss, jnp.zeros(()), optax.sgd(0.25), 4, batches=jnp.array([1., 2., 3.]))


def test_reptile_inner_minibatches_equal_a_python_loop_over_strided_minibatches():
  task = regression_task(jax.random.PRNGKey(1), shots=5, queries=7)  # 12 examples, support first
  params = mlp_params(jax.random.PRNGKey(0))
  steps, size, lr = 3, 5, 0.1
  grads, _ = jax.jit(jmeta.reptile(mlp_apply, lr, steps, inner_batch=size).meta_grad)(params, task)
  x, y = (np.concatenate([a, b]) for a, b in ((task.support.x, task.query.x), (task.support.y, task.query.y)))

  @jax.jit
  def sgd_step(fast, x, y):
    g = jax.grad(lambda p: jnp.mean((mlp_apply(p, x) - y) ** 2))(fast)
    return jax.tree.map(lambda p, d: p - lr * d, fast, g)

  fast = params
  for i in range(steps):
    rows = np.array([(i + steps * j) % 12 for j in range(size)])  # step 0: 0, 3, 6, 9, 0 (wraps)
    fast = sgd_step(fast, x[rows], y[rows])
  chex.assert_trees_all_close(grads, jax.tree.map(lambda p, f: p - f, _numpy(params), _numpy(fast)), rtol=1e-5,
                              atol=1e-6)
  with pytest.raises(ValueError, match='inner_batch must be an integer >= 1'):
    jmeta.reptile(mlp_apply, lr, steps, inner_batch=0)


def test_reptile_with_adam_outer_optimizer_moves_toward_adapted_weights():
  learner = jmeta.reptile(mlp_apply, 0.1, 3)
  params = mlp_params(jax.random.PRNGKey(0))
  task = regression_task(jax.random.PRNGKey(1))
  grads, _ = jax.jit(learner.meta_grad)(params, task)
  data = jmeta.Split(np.concatenate([task.support.x, task.query.x]), np.concatenate([task.support.y, task.query.y]))
  adapted = _numpy(jax.jit(lambda p, d: learner.adapt(p, d, steps=3))(params, data))
  params = _numpy(params)
  chex.assert_trees_all_close(grads, jax.tree.map(lambda p, a: p - a, params, adapted), rtol=1e-5, atol=1e-6)
  opt = optax.adam(1e-3)
  state = _init_state(learner, opt, jax.random.PRNGKey(2), params)
  batch = jax.tree.map(lambda a: np.asarray(a)[None], task)
  new_params = jax.jit(jmeta.meta_step(learner, opt))(state, batch)[0].params
  step = jax.tree.map(lambda n, p: np.asarray(n) - p, new_params, params)
  assert float(np.vdot(_flat(step), _flat(adapted) - _flat(params))) > 0


def test_anil_leaves_unmasked_parameters_untouched_in_the_inner_loop():
  params = mlp_params(jax.random.PRNGKey(0))
  task = regression_task(jax.random.PRNGKey(1))
  learner = jmeta.anil(mlp_apply, jmeta.path_mask('head'), 0.1, 3)
  fast = _numpy(jax.jit(learner.adapt)(params, task.support))
  params = _numpy(params)
  for name in ('hidden_0', 'hidden_1'):
    chex.assert_trees_all_equal(fast[name], params[name])
  assert float(np.abs(fast['head']['w'] - params['head']['w']).max()) > 1e-4
  grads = jax.jit(learner.meta_grad)(params, task)[0]
  assert float(np.abs(grads['hidden_0']['w']).max()) > 0  # the body is still meta-learned


def test_metasgd_step_sizes_receive_nonzero_gradients_and_drive_the_inner_step():
  learner = jmeta.metasgd(mlp_apply, 1)
  params = jax.jit(learner.init)(jax.random.PRNGKey(0), mlp_params(jax.random.PRNGKey(1)))
  assert isinstance(params, jmeta.algorithms.MetaSGDParams)
  lrs = _flat(params.lr)
  assert float(lrs.min()) >= 0.005 and float(lrs.max()) <= 0.1
  task = regression_task(jax.random.PRNGKey(2))
  grads = jax.jit(learner.meta_grad)(params, task)[0]
  for g in jax.tree.leaves(grads.lr):
    assert float(np.abs(g).max()) > 0
  g = jax.jit(jax.grad(lambda p: jnp.mean((mlp_apply(p, task.support.x) - task.support.y) ** 2)))(params.model)
  expected = jax.tree.map(lambda p, a, d: p - a * d, *_numpy((params.model, params.lr, g)))
  chex.assert_trees_all_close(jax.jit(learner.adapt)(params, task.support), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('make', [
    lambda s: jmeta.maml(mlp_apply, 0.1, s),
    lambda s: jmeta.metasgd(mlp_apply, s),
    lambda s: jmeta.maml(mlp_apply, 0.1, s, remat=True),
], ids=['maml', 'metasgd', 'maml-remat'])
def test_traced_program_does_not_grow_with_inner_steps(make):
  params = mlp_params(jax.random.PRNGKey(0))
  task = regression_task(jax.random.PRNGKey(1))

  def size(steps):
    learner = make(steps)
    p = learner.init(jax.random.PRNGKey(0), params)
    return str(jax.make_jaxpr(learner.meta_grad)(p, task)).count('\n')

  assert size(2) == size(25)


def test_adam_inner_loop_gives_finite_second_order_meta_gradient():
  relu_apply = lambda p, x: jax.nn.relu(x @ p['hidden_0']['w'] + p['hidden_0']['b']) @ p['head']['w'] + p['head']['b']
  params = mlp_params(jax.random.PRNGKey(0), (1, 16, 1))
  params['hidden_0']['b'] = np.asarray(params['hidden_0']['b']).copy()
  params['hidden_0']['b'][:4] = -100.0  # dead units: exactly zero gradients
  task = regression_task(jax.random.PRNGKey(1))
  learner = jmeta.maml(relu_apply, optax.adam(0.01, eps_root=1e-8), 3)
  grads = jax.jit(learner.meta_grad)(params, task)[0]
  assert all(bool(np.all(np.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(np.abs(_flat(grads)).max()) > 0


def test_remat_gives_the_same_meta_gradient():
  params = mlp_params(jax.random.PRNGKey(0))
  task = regression_task(jax.random.PRNGKey(1))
  plain, remat = jax.jit(lambda p, t: (jmeta.maml(mlp_apply, 0.1, 5).meta_grad(p, t),
                                       jmeta.maml(mlp_apply, 0.1, 5, remat=True).meta_grad(p, t)))(params, task)
  chex.assert_trees_all_close(plain, remat, rtol=1e-6, atol=1e-7)
