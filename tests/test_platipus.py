"""PLATIPUS and the ambiguous sine/line tasks against independent references: the KL term and a whole bound for a
linear model by hand (NumPy), explicit keys, float64 finite differences of the bound, and the task distribution's
ranges, noise and least-squares fits."""

import functools
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta import experiments
from jmeta.datasets import ambiguous as amb
from jmeta.tasks import Split, Task

from helpers import mlp_apply, mlp_params

P = importlib.import_module('jmeta.algorithms.platipus')  # `jmeta.algorithms.platipus` is the function


def _task(seed, shots=4, queries=6, dtype=np.float32):
  rng = np.random.default_rng(seed)
  xs, xq = rng.uniform(-2, 2, (shots, 1)), rng.uniform(-2, 2, (queries, 1))
  f = lambda x: np.sin(1.5 * x) + 0.5 * x
  return Task(Split(jnp.asarray(xs, dtype), jnp.asarray(f(xs), dtype)),
              Split(jnp.asarray(xq, dtype), jnp.asarray(f(xq) + 0.1 * rng.normal(size=xq.shape), dtype)))


def _randomised(params, seed, dtype=jnp.float32):
  """`PlatipusParams` with every std, step size and the noise moved off their initial values (in NumPy)."""
  rng = np.random.default_rng(seed)
  noisy = lambda tree, scale, shift: jax.tree.map(
      lambda a: jnp.asarray(shift + scale * rng.normal(size=np.shape(a)), dtype), tree)
  return P.PlatipusParams(params.mean, noisy(params.log_std, 0.3, -1.5), noisy(params.log_q_std, 0.3, -1.8),
                          jnp.asarray(0.07, dtype), jnp.asarray(0.12, dtype), jnp.asarray(-0.4, dtype))


def test_kl_term_is_the_closed_form_of_diagonal_gaussians():
  rng = np.random.default_rng(0)
  shapes = {'a': (3, 2), 'b': (4,)}
  draw = lambda scale=1.0: {k: rng.normal(size=s) * scale for k, s in shapes.items()}
  mq, sq, mp, sp = draw(), draw(0.5), draw(), draw(0.5)
  expected = 0.0
  # KL(N(mq, e^{2 sq}) || N(mp, e^{2 sp})) = sum log(s_p / s_q) + (s_q^2 + (mq - mp)^2) / (2 s_p^2) - 1/2
  for k in shapes:
    for i in np.ndindex(shapes[k]):
      vq, vp = math.exp(2 * sq[k][i]), math.exp(2 * sp[k][i])
      expected += sp[k][i] - sq[k][i] + (vq + (mq[k][i] - mp[k][i]) ** 2) / (2 * vp) - 0.5
  with jax.enable_x64(True):
    got = P.gaussian_kl(*(jax.tree.map(jnp.asarray, t) for t in (mq, sq, mp, sp)))
    np.testing.assert_allclose(float(got), expected, rtol=1e-12)
    assert float(P.gaussian_kl(*(jax.tree.map(jnp.asarray, t) for t in (mq, sq, mq, sq)))) == 0.0


def _linear_apply(params, x):
  return x @ params['w'] + params['b']


def test_bound_of_a_linear_model_matches_numpy_by_hand():
  """Algorithm 1 for `y = w x + b` with 2 inner steps, written out in NumPy with the learner's draws of epsilon."""
  learner = jmeta.platipus(_linear_apply, 0.05, 2, train_samples=2)
  task = _task(1)
  mean = {'w': jnp.asarray([[0.3]]), 'b': jnp.asarray([-0.2])}
  params = _randomised(learner.init(None, mean), 2)
  key = jax.random.PRNGKey(3)
  value, metrics = jax.jit(functools.partial(learner.loss, key=key))(params, task)

  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  (xs, ys), (xq, yq) = [(np.asarray(s.x, np.float64)[:, 0], np.asarray(s.y, np.float64)[:, 0])
                        for s in (task.support, task.query)]

  def grad(w, b, x, y):  # of mean((w x + b - y)^2)
    r = w * x + b - y
    return 2 * np.mean(r * x), 2 * np.mean(r)

  def shifted(gamma, x, y):
    gw, gb = grad(p.mean['w'][0, 0], p.mean['b'][0], x, y)
    return np.array([p.mean['w'][0, 0] - gamma * gw, p.mean['b'][0] - gamma * gb])

  q, prior = shifted(p.gamma_q, xq, yq), shifted(p.gamma_p, xs, ys)
  sq = np.exp([p.log_q_std['w'][0, 0], p.log_q_std['b'][0]])
  sp = np.exp([p.log_std['w'][0, 0], p.log_std['b'][0]])
  noise = np.exp(p.log_noise)
  nlls = []
  for k in jax.random.split(key, 2):
    eps = P.tree_normal(k, mean)
    w, b = q + sq * np.array([float(eps['w'][0, 0]), float(eps['b'][0])])
    for _ in range(2):
      gw, gb = grad(w, b, xs, ys)
      w, b = w - 0.05 * gw, b - 0.05 * gb
    r = yq - (w * xq + b)
    nlls.append(np.mean(0.5 * (r / noise) ** 2 + np.log(noise) + 0.5 * np.log(2 * np.pi)))
  kl = np.sum(np.log(sp / sq) + (sq ** 2 + (q - prior) ** 2) / (2 * sp ** 2) - 0.5)
  np.testing.assert_allclose(float(metrics['kl']), kl, rtol=1e-4)
  np.testing.assert_allclose(float(metrics['nll']), np.mean(nlls), rtol=1e-4)
  np.testing.assert_allclose(float(value), np.mean(nlls) + kl / len(xq), rtol=1e-4)


@pytest.fixture(scope='module')
def tiny():
  learner = jmeta.platipus(mlp_apply, 0.1, 1, samples=5)
  params = _randomised(learner.init(None, mlp_params(jax.random.PRNGKey(0), (1, 6, 1))), 1)
  adapt = jax.jit(lambda p, s, k: learner.adapt(p, s, key=k))
  return learner, params, adapt


def test_sampling_uses_explicit_keys(tiny):
  learner, params, adapt = tiny
  task = _task(4)
  key = jax.random.PRNGKey(7)
  one, again, other = adapt(params, task.support, key), adapt(params, task.support, key), adapt(
      params, task.support, jax.random.PRNGKey(8))
  jax.tree.map(np.testing.assert_array_equal, one, again)
  assert not np.allclose(one.fast['head']['w'], other.fast['head']['w'])
  w = np.asarray(one.fast['head']['w'])
  assert w.shape == (5, 6, 1) and len({tuple(np.round(r.ravel(), 6)) for r in w}) == 5  # five different models
  predictions = learner.predict(one, task.query.x)
  assert predictions.shape == (6, 5, 2)
  np.testing.assert_allclose(predictions[..., 1], math.exp(-0.4), rtol=1e-6)  # the learned noise level
  # Without a key: a function of the support points, the same for the same task, another for another task.
  hashed = jax.jit(lambda p, s: learner.adapt(p, s))
  jax.tree.map(np.testing.assert_array_equal, hashed(params, task.support), hashed(params, task.support))
  assert not np.allclose(hashed(params, task.support).fast['head']['b'],
                         hashed(params, _task(5).support).fast['head']['b'])


def test_adapt_draws_from_the_prior_then_takes_inner_steps(tiny):
  """`adapt` for a tiny MLP against the same draws done by hand: theta = mu - gamma_p grad + sigma eps, one SGD
  step of 0.1, for each of the five keys split from the key."""
  learner, params, adapt = tiny
  task = _task(6)
  key = jax.random.PRNGKey(11)
  state = adapt(params, task.support, key)
  loss = lambda p: jnp.mean(jnp.square(mlp_apply(p, task.support.x) - task.support.y))

  @jax.jit
  def by_hand(k):
    prior = jax.tree.map(lambda m, d: m - params.gamma_p * d, params.mean, jax.grad(loss)(params.mean))
    theta = jax.tree.map(lambda m, s, e: m + jnp.exp(s) * e, prior, params.log_std, P.tree_normal(k, prior))
    return jax.tree.map(lambda t, d: t - 0.1 * d, theta, jax.grad(loss)(theta))

  for i, k in enumerate(jax.random.split(key, 5)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=2e-5, atol=2e-6), state.fast, by_hand(k))


def test_gradient_of_the_bound_matches_float64_finite_differences():
  with jax.enable_x64(True):
    learner = jmeta.platipus(mlp_apply, 0.1, 2, train_samples=2)
    params = _randomised(learner.init(None, mlp_params(jax.random.PRNGKey(1), (1, 2, 1), jnp.float64)), 3,
                         jnp.float64)
    task = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), _task(7))
    key = jax.random.PRNGKey(5)
    f = jax.jit(jax.value_and_grad(lambda p: learner.loss(p, task, key=key)[0]))  # one program for both
    leaves, treedef = jax.tree.flatten(params)
    leaves = [np.asarray(a) for a in leaves]
    direction = [np.random.default_rng(i).normal(size=a.shape) for i, a in enumerate(leaves)]
    grads = [np.asarray(g) for g in jax.tree.leaves(f(params)[1])]
    analytic = sum(float(np.sum(g * d)) for g, d in zip(grads, direction))
    value_at = lambda step: float(f(jax.tree.unflatten(treedef, [a + step * d for a, d in zip(leaves, direction)]))[0])
    errors = [abs((value_at(eps) - value_at(-eps)) / (2 * eps) - analytic) / abs(analytic)
              for eps in (1e-3, 1e-4, 1e-5, 1e-6)]
    assert min(errors) < 1e-7, errors
    # every part of the meta-parameters gets a gradient: the stds through the draws and the KL, the step sizes
    assert all(np.max(np.abs(g)) > 0 for g in grads)


def test_bad_input_is_refused_with_the_expected_shape():
  learner = jmeta.platipus(mlp_apply, 0.1, 1)
  params = learner.init(None, mlp_params(jax.random.PRNGKey(0), (1, 3, 1)))
  labels = Split(jnp.zeros((4, 1)), jnp.zeros((4,), jnp.int32))
  with pytest.raises(ValueError, match=r'float \[examples, y_dim\]'):
    learner.adapt(params, labels)
  for kwargs, match in ((dict(samples=0), 'samples'), (dict(kl_weight=-1.0), 'kl_weight'),
                        (dict(init_std=float('nan')), 'init_std')):
    with pytest.raises(ValueError, match=match):
      jmeta.platipus(mlp_apply, 0.1, 1, **kwargs)


# The ambiguous sine/line tasks.

def test_sine_line_tasks_follow_the_papers_distribution():
  sample = amb.sine_line(5, 7, noise=0.3)
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  tasks, fs = jax.jit(jax.vmap(lambda k: (sample(k), sample.function(k))))(keys)
  assert tasks.support.x.shape == (4000, 5, 1) and tasks.query.y.shape == (4000, 7, 1)
  sines = np.asarray(fs.is_sine)
  assert abs(sines.mean() - 0.5) < 4 * 0.5 / math.sqrt(4000)
  for name, (lo, hi) in (('amplitude', amb.AMPLITUDE), ('phase', amb.PHASE), ('slope', amb.SLOPE),
                         ('intercept', amb.INTERCEPT)):
    v = np.asarray(getattr(fs, name))
    assert lo <= v.min() and v.max() <= hi and v.max() - v.min() > 0.95 * (hi - lo), name
  x = np.concatenate([tasks.support.x, tasks.query.x], 1)[..., 0]
  y = np.concatenate([tasks.support.y, tasks.query.y], 1)[..., 0]
  assert x.min() >= -5 and x.max() <= 5
  clean = np.where(sines[:, None], np.asarray(fs.amplitude)[:, None] * np.sin(x - np.asarray(fs.phase)[:, None]),
                   np.asarray(fs.slope)[:, None] * x + np.asarray(fs.intercept)[:, None])
  residual = (y - clean).ravel()
  assert abs(residual.std() - 0.3) < 0.01 and abs(residual.mean()) < 0.01
  windowed = jax.jit(jax.vmap(amb.sine_line(5, window=1.5)))(keys[:500])
  width = np.ptp(np.asarray(windowed.support.x)[..., 0], axis=1)
  assert width.max() <= 1.5 + 1e-6 and np.ptp(np.asarray(windowed.query.x)) > 9


def test_least_squares_fits_and_the_ambiguity_test():
  x = np.linspace(-5, 5, 50, dtype=np.float32)
  # A sine is nearly a line over a short interval: both families fit. Its phase, 0.5, lies inside the prior's [0, pi];
  # at 0 (sin itself) the fitted phase falls on either side of the bound by rounding (-3e-9 once compiled).
  near = np.linspace(-0.4, 0.4, 5, dtype=np.float32)[:, None]
  spread = np.linspace(-4.5, 4.5, 5, dtype=np.float32)[:, None]

  @jax.jit
  def run():
    sine, line = 2.0 * jnp.sin(x - 1.0), 0.5 * x - 1
    return (amb.fits(x, sine), amb.is_sine(x, sine), amb.fits(x, line), amb.is_sine(x, line),
            jnp.stack([amb.ambiguous(Split(near, jnp.sin(near - 0.5)), 0.3),
                       amb.ambiguous(Split(spread, 4 * jnp.sin(spread - 1.0)), 0.3),
                       amb.ambiguous(Split(near, 10 * near), 0.3)]))  # a line, but steeper than the prior's

  f_sine, sine_is_sine, f_line, line_is_sine, verdicts = run()
  np.testing.assert_allclose(f_sine.sine, [2 * math.cos(1.0), -2 * math.sin(1.0)], atol=1e-4)
  assert float(f_sine.sine_rms) < 1e-4 < float(f_sine.line_rms) and bool(sine_is_sine)
  np.testing.assert_allclose(f_line.line, [0.5, -1.0], atol=1e-4)
  assert float(f_line.line_rms) < 1e-4 and not bool(line_is_sine)
  assert verdicts.tolist() == [True, False, False]


def test_bad_task_settings_are_refused():
  for kwargs, match in ((dict(noise=0.0), 'noise'), (dict(window=20.0), 'window'), (dict(slope=(3, -3)), 'slope'),
                        (dict(sine_fraction=1.5), 'sine_fraction'), (dict(shots=0), 'shots')):
    with pytest.raises(ValueError, match=match):
      amb.sine_line(**kwargs)


def test_registry_entries_resolve_with_their_published_defaults():
  c = experiments.resolve(experiments.Config('platipus', 'ambiguous'))
  assert (c.shots, c.meta_batch, c.steps, c.inner_lr, c.inner_steps, c.kl_weight, c.samples, c.noise) == (
      5, 25, 70_000, 0.01, 1, 1.0, 10, 0.3)
  assert experiments.resolve(experiments.Config('platipus', 'sinusoid')).shots == 10
  with pytest.raises(ValueError, match='maml does not run on ambiguous'):
    experiments.resolve(experiments.Config('maml', 'ambiguous'))
