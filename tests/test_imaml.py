"""iMAML against independent references: a closed-form quadratic inner problem, float64 finite differences of the
meta-loss at the inner optimum, NumPy's linear solve, XLA's memory account, and the command line."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmeta
from jmeta import cli
from jmeta.training import read_metrics
from helpers import meta_batch, mlp_apply, mlp_params, regression_task



def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def _wb(tree):
  return np.concatenate([np.ravel(tree['w']), np.ravel(tree['b'])])


def linear_apply(params, x):
  return x @ params['w'] + params['b']


def test_conjugate_gradient_solves_a_positive_definite_system_in_n_steps_and_converges_before():
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    m = rng.normal(size=(6, 6))
    a = m @ m.T + 0.5 * np.eye(6)
    b = rng.normal(size=6)
    tree_b = {'u': jnp.asarray(b[:2]), 'v': jnp.asarray(b[2:]).reshape(2, 2)}

    def matvec(t):
      y = jnp.asarray(a) @ jnp.concatenate([t['u'], t['v'].ravel()])
      return {'u': y[:2], 'v': y[2:].reshape(2, 2)}

    exact = np.linalg.solve(a, b)
    solve = jax.jit(jmeta.algorithms.conjugate_gradient, static_argnums=(0, 2))
    np.testing.assert_allclose(_flat(solve(matvec, tree_b, 6)), exact, rtol=1e-9, atol=1e-10)
    errors = [np.linalg.norm(_flat(solve(matvec, tree_b, k)) - exact) for k in (1, 3, 5)]
    assert errors[0] > errors[1] > errors[2], errors
    # One step is the exact line search along b: x = (b.b / b.Ab) b.
    np.testing.assert_allclose(_flat(solve(matvec, tree_b, 1)), b @ b / (b @ a @ b) * b, rtol=1e-12)
    # A direction of negative curvature stops CG where it is, finite.
    indefinite = lambda t: jax.tree.map(lambda x: -x, t)
    chex.assert_trees_all_equal(solve(indefinite, tree_b, 3), jax.tree.map(np.zeros_like, tree_b))


def _quadratic_case():
  rng = np.random.default_rng(1)
  xs, xq = rng.normal(size=(6, 3)), rng.normal(size=(9, 3))
  ys, yq = rng.normal(size=(6, 1)), rng.normal(size=(9, 1))
  theta = {'w': jnp.asarray(rng.normal(size=(3, 1))), 'b': jnp.asarray(rng.normal(size=(1,)))}
  task = jmeta.Task(jmeta.Split(jnp.asarray(xs), jnp.asarray(ys)), jmeta.Split(jnp.asarray(xq), jnp.asarray(yq)))
  return xs, xq, ys, yq, theta, task


def test_meta_gradient_of_a_quadratic_inner_problem_equals_the_closed_form():
  with jax.enable_x64(True):
    xs, xq, ys, yq, theta, task = _quadratic_case()
    lam = 0.7
    # Features with a bias column: L_s(phi) = |A phi - y|^2 / n, Hessian H = 2 A^T A / n.
    a_s, a_q = np.hstack([xs, np.ones((6, 1))]), np.hstack([xq, np.ones((9, 1))])
    t = np.concatenate([np.ravel(theta['w']), np.ravel(theta['b'])])
    h = 2 * a_s.T @ a_s / 6
    phi = np.linalg.solve(h + lam * np.eye(4), 2 * a_s.T @ ys[:, 0] / 6 + lam * t)
    g = 2 * a_q.T @ (a_q @ phi - yq[:, 0]) / 9
    expected = np.linalg.solve(np.eye(4) + h / lam, g)
    # d phi / d y_support = (H + lam I)^-1 2 A^T / n, so d L_q / d y_support = (2 A / n) (H + lam I)^-1 g.
    expected_dy = 2 * a_s @ np.linalg.solve(h + lam * np.eye(4), g) / 6

    learner = jmeta.imaml(linear_apply, optax.sgd(0.2), 400, lam=lam, cg_steps=4, cg_damping=0.0)
    adapted = jax.jit(learner.adapt)(theta, task.support)
    np.testing.assert_allclose(_wb(adapted), phi, rtol=1e-10)
    grads, metrics = jax.jit(learner.meta_grad)(theta, task)
    np.testing.assert_allclose(_wb(grads), expected, rtol=1e-8)
    np.testing.assert_allclose(metrics['loss'], np.mean((a_q @ phi - yq[:, 0]) ** 2), rtol=1e-10)
    dy = jax.jit(jax.grad(lambda y: learner.loss(theta, task._replace(support=task.support._replace(y=y)))[0]))(
        task.support.y)
    np.testing.assert_allclose(np.ravel(dy), expected_dy, rtol=1e-8)
    # The dampings solve ((1 + cg_damping) I + H / (lam + lam_damping)) v = g instead.
    damped = jmeta.imaml(linear_apply, optax.sgd(0.2), 400, lam=lam, cg_steps=4, cg_damping=1.0, lam_damping=10.0)
    np.testing.assert_allclose(_wb(jax.jit(damped.meta_grad)(theta, task)[0]),
                               np.linalg.solve(2 * np.eye(4) + h / (lam + 10.0), g), rtol=1e-8)


def test_pull_back_takes_the_support_steps_alone_then_one_step_toward_theta():
  """The authors' code's inner loop, by hand in NumPy: 3 SGD steps of 0.2 on the support loss from theta, then
  phi <- phi - 0.2 lam (phi - theta); the meta-gradient is the same implicit one, at that phi."""
  with jax.enable_x64(True):
    xs, xq, ys, yq, theta, task = _quadratic_case()
    lam, a = 0.7, 0.2
    a_s, a_q = np.hstack([xs, np.ones((6, 1))]), np.hstack([xq, np.ones((9, 1))])
    t = np.concatenate([np.ravel(theta['w']), np.ravel(theta['b'])])
    phi = t.copy()
    for _ in range(3):
      phi = phi - a * 2 * a_s.T @ (a_s @ phi - ys[:, 0]) / 6
    phi = phi - a * lam * (phi - t)
    h, g = 2 * a_s.T @ a_s / 6, 2 * a_q.T @ (a_q @ phi - yq[:, 0]) / 9

    learner = jmeta.imaml(linear_apply, optax.sgd(a), 3, lam=lam, cg_steps=4, pull_back=True)
    np.testing.assert_allclose(_wb(jax.jit(learner.adapt)(theta, task.support)), phi, rtol=1e-12)
    np.testing.assert_allclose(_wb(jax.jit(learner.meta_grad)(theta, task)[0]),
                               np.linalg.solve(np.eye(4) + h / lam, g), rtol=1e-8)


def test_meta_gradient_approaches_float64_finite_differences_at_the_inner_optimum_of_an_mlp():
  with jax.enable_x64(True):
    params = mlp_params(jax.random.PRNGKey(0), (1, 4, 4, 1), jnp.float64)
    task = regression_task(jax.random.PRNGKey(1), dtype=jnp.float64)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    lam, lr = 2.0, 0.1
    at_optimum = jmeta.imaml(mlp_apply, lr, 200, lam=lam, cg_steps=flat.size)
    loss = lambda f: at_optimum.loss(unravel(f), task)[0]
    basis = np.eye(flat.size)
    central = lambda e, eps: (loss(flat + eps * e) - loss(flat - eps * e)) / (2 * eps)
    cases = ((2, 1), (10, 3), (200, flat.size))

    @jax.jit  # the differences at three steps and the three meta-gradients in one program
    def differences_and_meta_gradients(params, steps):
      fds = jax.vmap(jax.vmap(central, in_axes=(0, None)), in_axes=(None, 0))(basis, steps)
      return fds, [jmeta.imaml(mlp_apply, lr, s, lam=lam, cg_steps=c).meta_grad(params, task)[0] for s, c in cases]

    fds, grads = differences_and_meta_gradients(params, np.array([1e-4, 1e-5, 1e-6]))
    errors = [min(float(np.linalg.norm(_flat(g) - fd) / np.linalg.norm(fd)) for fd in np.asarray(fds)) for g in grads]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[0] > 0.05 and errors[2] < 1e-6, errors


def test_vmap_over_tasks_equals_a_loop_over_tasks():
  params = mlp_params(jax.random.PRNGKey(0))
  batch = meta_batch(jax.random.PRNGKey(1), tasks=3)
  learner = jmeta.imaml(mlp_apply, optax.sgd(0.1, momentum=0.5), 3, lam=1.0, cg_steps=3, cg_damping=0.5)
  grads, metrics = jax.tree.map(np.asarray, jax.jit(jax.vmap(learner.meta_grad, in_axes=(None, 0)))(params, batch))
  batch = jax.tree.map(np.asarray, batch)
  per_task = jax.jit(learner.meta_grad)
  for i in range(3):
    g, m = per_task(params, jax.tree.map(lambda a: a[i], batch))
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], grads), g, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(metrics['loss'][i], m['loss'], rtol=1e-5)


def test_memory_of_a_meta_gradient_does_not_grow_with_inner_steps_unlike_maml():
  params = mlp_params(jax.random.PRNGKey(0), (1, 64, 64, 1))
  task = regression_task(jax.random.PRNGKey(1), shots=32, queries=32)

  def temp_bytes(learner):
    return jax.jit(learner.meta_grad).lower(params, task).compile().memory_analysis().temp_size_in_bytes

  implicit = [temp_bytes(jmeta.imaml(mlp_apply, 0.1, s, lam=2.0, cg_steps=2)) for s in (2, 32)]
  unrolled = temp_bytes(jmeta.maml(mlp_apply, 0.1, 32))
  assert implicit[1] <= 1.05 * implicit[0], implicit
  assert unrolled > 4 * implicit[1], (unrolled, implicit)


def test_learns_the_mean_of_linear_tasks():
  # y = x w_t with w_t ~ N(w0, 0.1^2) on one shared design: the meta-loss is smallest at theta = w0.
  x = jnp.linspace(-1, 1, 8)[:, None]
  w0 = 1.5

  def sample(key):
    w = w0 + 0.1 * jax.random.normal(key, ())
    return jmeta.Task(jmeta.Split(x, x * w), jmeta.Split(x, x * w))

  apply_fn = lambda p, x: x * p['w']
  learner = jmeta.imaml(apply_fn, 0.5, 10, lam=1.0, cg_steps=1)
  outer = optax.adam(0.05)
  state = jax.jit(lambda k, p: jmeta.init_state(learner, outer, k, p))(jax.random.PRNGKey(0), {'w': jnp.zeros(())})
  step = jax.jit(jmeta.meta_step(learner, outer))
  tasks = jax.jit(lambda k: jax.vmap(sample)(jax.random.split(k, 8)))
  keys = np.asarray(jax.random.split(jax.random.PRNGKey(1), 300))
  for k in keys:
    state, _ = step(state, tasks(k))
  assert abs(float(state.params['w']) - w0) < 0.05, state.params


@pytest.mark.parametrize('kwargs, message', [
    (dict(lam=0.0), 'lam .* must be a positive finite number'),
    (dict(cg_steps=0), r'cg_steps .* must be an integer >= 1'),
    (dict(cg_damping=-1.0), 'cg_damping must be a finite number >= 0'),
    (dict(lam_damping=float('nan')), 'lam_damping must be a finite number >= 0'),
    (dict(steps=0), r'steps .* must be an integer >= 1'),
])
def test_bad_arguments_raise_value_error_naming_the_problem(kwargs, message):
  with pytest.raises(ValueError, match=message):
    jmeta.imaml(mlp_apply, **{'inner_opt': 0.1, **kwargs})


def test_train_stopped_resumed_and_evaluated_from_the_command_line(tmp_path, capsys):
  out = str(tmp_path / 'run')
  args = ['train', '--algo', 'imaml', '--dataset', 'sinusoid', '--steps', '4', '--log-every', '2', '--meta-batch',
          '2', '--inner-steps', '3', '--cg-steps', '2', '--valid-episodes', '0', '--eval-episodes', '10',
          '--no-progress', '--out', out]
  cli.main(args + ['--time-limit', '1e-6'])
  assert [m['step'] for m in read_metrics(out)] == [2]
  record = cli.main(args + ['--resume'])
  metrics = read_metrics(out)
  assert [m['step'] for m in metrics] == [2, 4] and all(np.isfinite(m['loss']) for m in metrics)
  assert record['inner_steps'] == 3 and record['mse'] > 0
  config = json.loads((tmp_path / 'run' / 'config.json').read_text())
  fields = ('lam', 'cg_steps', 'cg_damping', 'lam_damping', 'inner_lr', 'pull_back')
  assert [config[k] for k in fields] == [2.0, 2, 1.0, 10.0, 0.01, False]
  assert cli.main(['eval', out, '--episodes', '10']) == record
  with pytest.raises(ValueError, match='cg_damping must be a finite number >= 0'):
    cli.main(args[:-1] + [str(tmp_path / 'x'), '--cg-damping', '-1'])
