"""Learned optimizers (jmeta.optimizers): updates against NumPy by hand, checkpoints, evosax's ES estimate against
the true gradient, truncated unrolls against float64 finite differences, MAML with a learned inner optimizer."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jmeta import optimizers as lo
from jmeta.optimizers.learned import MLP_DECAYS, RMS_DECAY, TIMESCALES
from tests.helpers import mlp_apply, mlp_params, regression_task


def _params():
  return {'a': jnp.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]]), 'b': jnp.array([1.5, -0.5])}


def _grads(t):
  # Both branches of the preprocessing: |g| >= e^-10 and below it.
  return {'a': jnp.array([[0.3, -2e-5, 1e-6], [-4.0, 0.0, -3e-7]]) * (t + 1), 'b': jnp.array([1e-3, -0.7]) * (t + 1)}


def _np_sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _np_log_sign(g, p=10.0):
  out = np.empty(g.shape + (2,))
  for i, v in np.ndenumerate(g):
    out[i] = (math.log(abs(v)) / p, np.sign(v)) if abs(v) >= math.exp(-p) else (-1.0, math.exp(p) * v)
  return out


def test_lstm_update_matches_a_numpy_lstm_by_hand():
  meta = lo.init_lstm_meta_params(jax.random.PRNGKey(0), hidden=3)
  meta['out']['b'] = jnp.array(0.2)
  opt = lo.lstm_optimizer(meta, scale=0.1)
  m = jax.tree.map(lambda x: np.asarray(x, np.float64), meta)
  params = _params()
  state = opt.init(params)
  h = {k: np.zeros(v.shape + (2, 3)) for k, v in params.items()}
  c = {k: np.zeros(v.shape + (2, 3)) for k, v in params.items()}
  for t in range(2):
    grads = _grads(t)
    updates, state = jax.jit(opt.update)(grads, state, params)
    for name, g in grads.items():
      x = _np_log_sign(np.asarray(g, np.float64))
      for idx in np.ndindex(g.shape):
        inp = x[idx]
        for layer in range(2):
          w = m[f'layer{layer}']
          z = inp @ w['w_x'] + h[name][idx][layer] @ w['w_h'] + w['b']
          i, f, gg, o = z[:3], z[3:6], z[6:9], z[9:]
          c[name][idx][layer] = _np_sigmoid(f) * c[name][idx][layer] + _np_sigmoid(i) * np.tanh(gg)
          h[name][idx][layer] = _np_sigmoid(o) * np.tanh(c[name][idx][layer])
          inp = h[name][idx][layer]
        want = 0.1 * (inp @ m['out']['w'] + m['out']['b'])
        np.testing.assert_allclose(updates[name][idx], want, rtol=2e-5, atol=1e-7)
      np.testing.assert_allclose(state.h[name], h[name], rtol=2e-5, atol=1e-6)
      np.testing.assert_allclose(state.c[name], c[name], rtol=2e-5, atol=1e-6)
    params = optax.apply_updates(params, updates)


def test_mlp_update_matches_numpy_by_hand():
  meta = lo.init_mlp_meta_params(jax.random.PRNGKey(1), hidden=4)
  meta['out']['b'] = jnp.array([0.3, 2.0])
  opt = lo.mlp_optimizer(meta, step_mult=0.01, exp_mult=0.5)
  m = jax.tree.map(lambda x: np.asarray(x, np.float64), meta)
  params = _params()
  state = opt.init(params)
  mom = {k: np.zeros(v.shape + (5,)) for k, v in params.items()}
  rms = {k: np.zeros(v.shape) for k, v in params.items()}
  betas = np.array(MLP_DECAYS)
  for t in range(2):
    grads = _grads(t)
    updates, state = jax.jit(opt.update)(grads, state, params)
    for name in params:
      p, g = np.asarray(params[name], np.float64), np.asarray(grads[name], np.float64)
      mom[name] = betas * mom[name] + (1 - betas) * g[..., None]
      rms[name] = RMS_DECAY * rms[name] + (1 - RMS_DECAY) * g**2
      rs = 1 / np.sqrt(rms[name] + 1e-6)
      rows = [np.concatenate([[p[i], g[i]], mom[name][i], mom[name][i] * rs[i], [rs[i]]])
              for i in np.ndindex(p.shape)]
      feats = np.array(rows)
      feats = feats / np.sqrt(1e-5 + np.mean(feats**2, axis=0))
      time_feats = np.tanh(t / np.array(TIMESCALES, np.float64))
      for row, idx in zip(feats, np.ndindex(p.shape)):
        x = np.concatenate([row, time_feats])
        for layer in ('layer0', 'layer1'):
          x = np.maximum(x @ m[layer]['w'] + m[layer]['b'], 0)
        d, mag = x @ m['out']['w'] + m['out']['b']
        np.testing.assert_allclose(updates[name][idx], -d * np.exp(mag * 0.5) * 0.01, rtol=1e-4, atol=1e-8)
    assert int(state.count) == t + 1
    params = optax.apply_updates(params, updates)


def test_log_sign_and_bad_input():
  g = jnp.array([2.0, -1e-3, 1e-5, -1e-6, 0.0])
  np.testing.assert_allclose(lo.log_sign(g), _np_log_sign(np.asarray(g, np.float64)), rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match='update needs params'):
    opt = lo.mlp_optimizer(lo.init_mlp_meta_params(jax.random.PRNGKey(0), hidden=2))
    opt.update(_grads(0), opt.init(_params()))
  with pytest.raises(ValueError, match='layer0 takes 2 inputs'):
    lo.lstm_optimizer(lo.init_lstm_meta_params(jax.random.PRNGKey(0), hidden=2), preprocess=False)
  with pytest.raises(ValueError, match='horizon'):
    lo.tbptt(lo.quadratic(2), lo.lstm_optimizer, optax.sgd(1.0), truncation=3, horizon=10)


def test_states_round_trip_through_jmeta_checkpoints(tmp_path):
  from jmeta.training import Checkpoints, TrainState
  params = _params()
  lstm_meta = lo.init_lstm_meta_params(jax.random.PRNGKey(0), hidden=2)
  mlp_meta = lo.init_mlp_meta_params(jax.random.PRNGKey(1), hidden=2)
  lstm, mlp = lo.lstm_optimizer(lstm_meta), lo.mlp_optimizer(mlp_meta)
  _, s_lstm = jax.jit(lstm.update)(_grads(0), lstm.init(params), params)
  _, s_mlp = jax.jit(mlp.update)(_grads(0), mlp.init(params), params)
  state = TrainState({'lstm': lstm_meta, 'mlp': mlp_meta}, (s_lstm, s_mlp), jnp.array(3, jnp.int32),
                     jax.random.PRNGKey(5))
  ckpt = Checkpoints(tmp_path)
  ckpt.save(state)
  ckpt.wait()
  back = ckpt.restore(jax.tree.map(jnp.zeros_like, state))
  ckpt.close()
  assert jax.tree.structure(back) == jax.tree.structure(state)
  assert isinstance(back.opt_state[0], lo.LSTMOptimizerState) and isinstance(back.opt_state[1], lo.MLPOptimizerState)
  jax.tree.map(np.testing.assert_array_equal, back, state)


def test_evosax_antithetic_estimate_agrees_with_the_gradient_of_a_quadratic():
  from evosax.algorithms import PersistentES
  dim, pairs, std = 6, 2000, 0.05
  a = jax.random.normal(jax.random.PRNGKey(0), (dim, dim))
  a = a @ a.T / dim + jnp.eye(dim)
  b, theta = jax.random.normal(jax.random.PRNGKey(1), (dim,)), jax.random.normal(jax.random.PRNGKey(2), (dim,))
  f = lambda x: 0.5 * x @ a @ x + b @ x
  true = a @ theta + b
  # With the identity as its optimizer and a zero mean, evosax's new mean is its gradient estimate; T = K makes
  # PES antithetic ES on one truncation.
  es = PersistentES(2 * pairs, jnp.zeros(dim), optimizer=optax.identity(), std_schedule=optax.constant_schedule(std))
  params = es.default_params.replace(T=1, K=1)
  state = es.init(jax.random.PRNGKey(3), jnp.zeros(dim), params)
  members, state = es.ask(jax.random.PRNGKey(4), state, params)
  fitness = jax.vmap(lambda d: f(theta + d))(members)
  state, _ = es.tell(jax.random.PRNGKey(5), members, fitness, state, params)
  estimate = state.mean
  # For a quadratic, each pair gives e e^T grad exactly, whose i-th entry has variance |grad|^2 + grad_i^2.
  sd = jnp.sqrt((jnp.sum(true**2) + true**2) / pairs)
  assert jnp.all(jnp.abs(estimate - true) < 4 * sd), (estimate, true, sd)
  assert float(jnp.max(jnp.abs(estimate - true) / sd)) > 0.05  # a sampled estimate, not the gradient itself


@pytest.fixture(scope='module')
def tiny_lstm():
  return lo.init_lstm_meta_params(jax.random.PRNGKey(7), hidden=2, layers=2)


def test_truncated_unroll_meta_gradient_matches_float64_finite_differences(tiny_lstm):
  with jax.enable_x64(True):
    meta = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tiny_lstm)
    meta['out']['w'] = meta['out']['w'] * 50  # a step that moves theta visibly
    family = lo.quadratic(2)
    task = family.sample(jax.random.PRNGKey(0))
    task = lo.InnerTask(jax.tree.map(lambda x: 0.5 * jnp.asarray(x, jnp.float64), task.data), task.spec)
    theta = jnp.asarray(task.init(jax.random.PRNGKey(1)), jnp.float64)

    def meta_loss(m):
      opt = lo.lstm_optimizer(m)
      state = lo.Unroll(task, theta, opt.init(theta), jnp.zeros((), jnp.int32), jax.random.PRNGKey(2))
      return jnp.mean(lo.unroll(opt, state, 3, second_order=True)[1])

    meta_loss = jax.jit(meta_loss)
    grad = jax.jit(jax.grad(meta_loss))(meta)
    direction = jax.tree.map(lambda x: jax.random.normal(jax.random.PRNGKey(x.size), x.shape, jnp.float64), meta)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
    shifted = lambda e: meta_loss(jax.tree.map(lambda m, d: m + e * d, meta, direction))
    errors = [abs(float((shifted(e) - shifted(-e)) / (2 * e) - analytic)) for e in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)]
    assert min(errors) < 1e-7 * max(1.0, abs(float(analytic))), (errors, analytic)
    assert abs(float(analytic)) > 1e-3


def test_tbptt_steps_by_the_truncation_gradient_and_carries_the_inner_state_on(tiny_lstm):
  family = lo.quadratic(3)
  init, step = lo.tbptt(family, lo.lstm_optimizer, optax.sgd(1.0), tasks=2, truncation=2, horizon=4)
  state = init(jax.random.PRNGKey(0), tiny_lstm)

  def meta_loss(m):
    opt = lo.lstm_optimizer(m)
    ends, losses = jax.vmap(lambda s: lo.unroll(opt, s, 2))(state.unrolls)
    return jnp.mean(losses), ends

  (value, ends), grad = jax.jit(jax.value_and_grad(meta_loss, has_aux=True))(tiny_lstm)
  step = jax.jit(step)
  new, metrics = step(state, jax.random.PRNGKey(1))
  jax.tree.map(lambda n, m, g: np.testing.assert_allclose(n, m - g, rtol=1e-5, atol=1e-6), new.meta_params,
               tiny_lstm, grad)
  np.testing.assert_allclose(new.unrolls.params, ends.params, rtol=1e-6)  # persists: not restarted at step 2
  assert np.all(new.unrolls.step == 2) and np.isclose(metrics['loss'], value, rtol=1e-6)
  newer, _ = step(new, jax.random.PRNGKey(2))  # step 4 = horizon: fresh tasks at step 0
  assert np.all(newer.unrolls.step == 0)
  assert not np.allclose(newer.unrolls.task.data[0], state.unrolls.task.data[0])


def test_lstm_optimizer_is_maml_inner_optimizer(tiny_lstm):
  import jmeta
  params = mlp_params(jax.random.PRNGKey(0), (1, 4, 1))
  task = regression_task(jax.random.PRNGKey(1))
  opt = lo.lstm_optimizer(tiny_lstm)
  learner = jmeta.maml(mlp_apply, inner_opt=opt, steps=2)
  fast = jax.jit(learner.adapt)(params, task.support)

  @jax.jit
  def by_hand_steps(p):
    state = opt.init(p)
    for _ in range(2):
      grads = jax.grad(lambda q: jnp.mean((mlp_apply(q, task.support.x) - task.support.y)**2))(p)
      updates, state = opt.update(grads, state, p)
      p = optax.apply_updates(p, updates)
    return p

  by_hand = by_hand_steps(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), fast, by_hand)
  assert not np.allclose(fast['head']['b'], params['head']['b'])
