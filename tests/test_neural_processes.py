"""Neural processes against independent references: permutations and padding of the context, the ELBO's terms and
the Gaussian formulas by hand (NumPy, SciPy), float64 finite differences, and a short run that learns."""

import logging

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import integrate, stats

import jmeta
from jmeta import experiments, losses
from jmeta.algorithms.neural_process import data_key, joint_log_likelihood, neural_process, predictive_moments
from jmeta.datasets import gp_functions
from jmeta.models import NeuralProcess
from jmeta.models.neural_process import init_params
from jmeta.tasks import Split, Task


TINY = dict(hidden=8, encoder_layers=2, decoder_layers=1)
MODELS = {'cnp': TINY, 'np': dict(TINY, latent_dim=4),
          'anp': dict(TINY, latent_dim=4, attention=True, heads=2, self_attention=1)}


def _split(seed, n, mask=None):
  """`n` noisy points of a sine, made in NumPy (eager JAX would compile each small op)."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(-2, 2, (n, 1)).astype(np.float32)
  y = (np.sin(3 * x) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
  return Split(jnp.asarray(x), jnp.asarray(y), None if mask is None else jnp.asarray(mask))


def _padded(split, junk_at, total, seed):
  """`split` spread over `total` rows, finite junk (and mask False) at the rows `junk_at`."""
  rng = np.random.default_rng(seed)
  real_rows = [i for i in range(total) if i not in junk_at]
  x, y = 50 * rng.normal(size=(total, 1)), -50 * rng.normal(size=(total, 1))
  x[real_rows], y[real_rows] = split.x, split.y
  return Split(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.asarray(np.isin(np.arange(total),
                                                                                             real_rows)))


def _init(learner, seed=0):
  """Parameters shaped as `learner.init` makes them, drawn in NumPy: compiling Flax's initialisers takes seconds."""
  rng = np.random.default_rng(seed)
  fan_in = lambda shape: shape[-2] if len(shape) > 1 else 4
  return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) / np.sqrt(fan_in(a.shape)), a.dtype),
                      jax.eval_shape(learner.init, jax.random.PRNGKey(seed)))


@pytest.mark.parametrize('name', sorted(MODELS))
def test_context_encoding_is_permutation_invariant_and_padding_changes_nothing(name):
  learner = neural_process(NeuralProcess(**MODELS[name]), samples=3)
  params = _init(learner)
  support = _split(1, 5)
  x = _split(2, 6).x
  def outputs(s):
    state = learner.adapt(params, s)
    return state, learner.predict(state, x)

  run = lambda batch: jax.tree.map(np.asarray, jax.jit(jax.vmap(outputs))(batch))  # indexed in NumPy
  perm = np.array([3, 0, 4, 1, 2])
  support = jax.tree.map(np.asarray, support)
  moved = support._replace(y=support.y + (np.arange(5) == 2)[:, None])
  # The unpadded context (no mask), permuted, and with a real point moved, in one batch; then padded.
  out = run(jax.tree.map(lambda *a: np.stack(a), support, jax.tree.map(lambda a: a[perm], support), moved))
  (state, base), (perm_state, permuted), (_, moved) = [jax.tree.map(lambda a: a[i], out) for i in range(3)]
  padded = jax.tree.map(lambda a: a[0], run(jax.tree.map(lambda a: np.asarray(a)[None],
                                                         _padded(support, (0, 3, 6), 8, 3))))
  assert base.shape == ((6, 2) if name == 'cnp' else (6, 3, 2))
  for other in ((perm_state, permuted), padded):
    np.testing.assert_allclose(other[1], base, rtol=1e-5, atol=1e-6)
    if name != 'anp':  # one representation of the whole set (an ANP keeps one per point, for its attention)
      np.testing.assert_allclose(other[0].encoding.values, state.encoding.values, rtol=1e-5, atol=1e-6)
    if name != 'cnp':  # the same draws of z: the key comes from the context as a set
      np.testing.assert_allclose(other[0].z, state.z, rtol=1e-5, atol=1e-6)
  # The predictions do depend on the context: moving one real point changes them.
  assert np.abs(np.asarray(moved - base)).max() > 1e-3


def test_data_key_is_a_function_of_the_real_points_as_a_set():
  split = _split(0, 4, [True, False, True, True])
  keys = jax.jit(jax.vmap(data_key))(jax.tree.map(lambda *a: jnp.stack(a), split,
                                                    jax.tree.map(lambda a: a[jnp.array([2, 0, 3, 1])], split),
                                                    split._replace(x=split.x.at[1].set(7.0)),  # padding
                                                    split._replace(x=split.x.at[0].add(1e-3))))
  np.testing.assert_array_equal(keys[1], keys[0])
  np.testing.assert_array_equal(keys[2], keys[0])
  assert not np.array_equal(keys[3], keys[0])
  assert not np.array_equal(jax.jit(data_key)(split, split), keys[0])


def test_gaussian_kl_and_log_likelihood_against_hand_and_scipy():
  rng = np.random.default_rng(0)
  y, mean, std = rng.normal(size=(5, 1)), rng.normal(size=(5, 3, 1)), rng.uniform(0.2, 2, size=(5, 3, 1))
  one, mixture = np.concatenate([mean[:, 0], std[:, 0]], -1), np.concatenate([mean, std], -1)

  @jax.jit
  def ours(one, mixture, y):
    return (losses.normal_kl(1.0, 0.5, 0.0, 1.0), losses.normal_kl(-0.3, 0.7, 0.4, 1.3),
            losses.gaussian_log_likelihood(one, y), losses.gaussian_log_likelihood(mixture, y),
            predictive_moments(mixture))

  kl_hand, kl, log_p, log_mixture, (got_mean, got_std) = ours(one, mixture, y)
  # KL(N(1, 0.5^2) || N(0, 1)) = log 2 + (0.25 + 1) / 2 - 1/2, by hand; and another by numerical integration.
  assert float(kl_hand) == pytest.approx(np.log(2) + 0.625 - 0.5, rel=1e-6)
  q, p = stats.norm(-0.3, 0.7), stats.norm(0.4, 1.3)
  assert float(kl) == pytest.approx(integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - p.logpdf(z)), -15, 15)[0],
                                    rel=1e-5)
  assert float(log_p) == pytest.approx(stats.norm.logpdf(y, mean[:, 0], std[:, 0]).mean(), rel=1e-5)
  want = np.log(stats.norm.pdf(y[:, None], mean, std)[..., 0].mean(1)).mean()
  assert float(log_mixture) == pytest.approx(want, rel=1e-5)
  np.testing.assert_allclose(got_mean, mean.mean(1), rtol=1e-5)
  np.testing.assert_allclose(got_std, np.sqrt((std ** 2 + mean ** 2).mean(1) - mean.mean(1) ** 2), rtol=1e-4)
  with pytest.raises(ValueError, match=r'expected predictions \[examples, 2 \* dim\]'):
    jax.eval_shape(losses.gaussian_log_likelihood, jnp.zeros((5, 3)), jnp.zeros((5, 1)))


@pytest.mark.parametrize('include', [True, False])
def test_elbo_terms_on_a_hand_computed_case(include):
  model = NeuralProcess(**MODELS['np'])
  learner = neural_process(model, targets_include_context=include)
  params = _init(learner)
  support = _split(1, 4, [True, True, False, True])
  query = _split(2, 5, [True, True, True, False, True])
  task, key = Task(support, query), jax.random.PRNGKey(7)
  targets = query if include else jmeta.tasks.all_examples(task)

  @jax.jit
  def network(params):
    """The loss, and the network's pieces the loss is assembled from."""
    prior = model.apply(params, support.x, support.y, support.mask, method='latent')
    post = model.apply(params, targets.x, targets.y, targets.mask, method='latent')
    z = post[0] + post[1] * jax.random.normal(key, post[0].shape)
    encoding = model.apply(params, support.x, support.y, support.mask, method='encode')
    return (learner.loss(params, task, key=key), learner.loss(params, task, key=data_key(support, query))[0],
            learner.loss(params, task)[0], prior, post, model.apply(params, encoding, z, targets.x, method='decode'))

  (value, metrics), with_data_key, without_key, prior, post, out = network(params)
  # The same quantities assembled by hand from the network's pieces, in NumPy.
  prior, post = [np.asarray(a, np.float64) for a in prior], [np.asarray(a, np.float64) for a in post]
  out = np.asarray(out)
  real = np.asarray(targets.mask)
  log_p = stats.norm.logpdf(np.asarray(targets.y)[real, 0], out[real, 0], out[real, 1]).mean()
  kl = np.sum(np.log(prior[1] / post[1]) + (post[1] ** 2 + (post[0] - prior[0]) ** 2) / (2 * prior[1] ** 2) - 0.5)
  assert float(metrics['log_likelihood']) == pytest.approx(log_p, rel=1e-5)
  # The KL is a sum of O(1) terms that cancel to about 1e-3: float32 leaves an absolute error near 1e-7 per term.
  assert float(metrics['kl']) == pytest.approx(kl, rel=1e-4, abs=1e-6) and kl > 0
  assert float(value) == pytest.approx(-(log_p - kl / real.sum()), rel=1e-5)
  # Without a key, the key is the data's.
  assert float(without_key) == float(with_data_key) != float(value)


def test_cnp_loss_gradient_matches_float64_finite_differences():
  with jax.enable_x64(True):
    model = NeuralProcess(hidden=4, encoder_layers=2, decoder_layers=1)
    learner = neural_process(model)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), _init(learner))
    support = _split(1, 4, [True, False, True, True])
    query = _split(2, 5, [True, True, False, True, True])
    task = jax.tree.map(lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a, Task(support, query))
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    loss = lambda f: learner.loss(unravel(f), task)[0]
    grad = np.asarray(jax.jit(jax.grad(loss))(flat))
    directions = np.array(jax.random.normal(jax.random.PRNGKey(3), (6, flat.size), jnp.float64))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    fd = jax.jit(jax.vmap(lambda e, eps: (loss(flat + eps * e) - loss(flat - eps * e)) / (2 * eps),
                            in_axes=(0, None)))
    want = directions @ grad
    assert np.abs(want).max() > 1e-3
    for eps in (1e-3, 1e-4, 1e-5):  # central differences: error O(eps^2) + O(1e-16 / eps)
      np.testing.assert_allclose(np.asarray(fd(jnp.asarray(directions), eps)), want, rtol=1e-5, atol=1e-8)


def test_a_cnp_learns_gp_functions():
  learner = jmeta.cnp(hidden=32, encoder_layers=2)
  opt = optax.adam(2e-3)
  score = losses.masked(losses.gaussian_log_likelihood)

  @jax.jit
  def run(key):
    held_out = jax.vmap(gp_functions(targets_include_context=False, extra=20))(
        jax.random.split(jax.random.PRNGKey(1), 100))

    def log_likelihood(predict):
      return jnp.mean(jax.vmap(lambda t: score(predict(t), t.query.y, t.query.mask))(held_out))

    # The best prediction that ignores the context: the GP's prior marginal N(0, 1 + 0.02^2) at every target.
    prior = log_likelihood(lambda t: jnp.concatenate([jnp.zeros_like(t.query.y),
                                                      jnp.full_like(t.query.y, jnp.sqrt(1 + 2e-2 ** 2))], -1))
    cnp_log_likelihood = lambda p: log_likelihood(lambda t: learner.predict(learner.adapt(p, t.support), t.query.x))
    state = jmeta.init_state(learner, opt, key, learner.init(key))
    before = cnp_log_likelihood(state.params)
    state, _ = jmeta.training.sampled_steps(jmeta.meta_step(learner, opt), gp_functions(), 8, 1000)(state)
    return before, cnp_log_likelihood(state.params), prior

  before, after, prior = map(float, run(jax.random.PRNGKey(0)))
  # Measured: -1.49 untrained, -1.18 after 1,000 steps, -1.37 for the prior; the exact GP scores about +0.4.
  assert after > before + 0.25 and after > prior + 0.12, (before, after, prior)


def test_joint_log_likelihood_corrects_for_its_proposal():
  model = NeuralProcess(hidden=8, encoder_layers=2, decoder_layers=1, latent_dim=2, deterministic_path=False)
  learner = neural_process(model, samples=100_000)
  params = _init(learner)
  # Latent means that move with the data, so that the proposal q(z | C and T) is far enough from q(z | C) for the
  # weights to matter.
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: 3 * p if 'latent_loc' in jax.tree_util.keystr(path) else p, params)
  task = Task(_split(1, 3), Split(jnp.array([[0.5]]), jnp.array([[1.5]])))

  @jax.jit
  def estimates(key):
    estimate = joint_log_likelihood(learner, params, task, key, samples=40_000)
    # One target: the joint is the marginal, which the prior's draws estimate without any proposal.
    by_prior = losses.gaussian_log_likelihood(
        learner.predict(learner.adapt(params, task.support, key=jax.random.PRNGKey(3)), task.query.x), task.query.y)
    # Without the weights q(z | C) / q(z | C and T), the proposal's draws estimate another quantity.
    everything = jmeta.tasks.all_examples(task)
    loc, scale = model.apply(params, everything.x, everything.y, jnp.ones(4, bool), method='latent')
    z = loc + scale * jax.random.normal(key, (4000, 2))
    uncorrected = losses.gaussian_log_likelihood(
        learner.predict(learner.adapt(params, task.support)._replace(z=z), task.query.x), task.query.y)
    return estimate, by_prior, uncorrected

  estimate, by_prior, uncorrected = map(float, estimates(jax.random.PRNGKey(2)))
  # Measured: -10.14 by the prior's draws; the estimate within 0.05 of it over 6 keys, the uncorrected one 0.3 off.
  assert estimate == pytest.approx(by_prior, abs=0.06)
  assert abs(uncorrected - by_prior) > 0.2, (uncorrected, by_prior)


def test_context_and_target_feature_sizes_must_match_the_model():
  learner = jmeta.anp(**{k: v for k, v in MODELS['anp'].items() if k != 'attention'})
  params = jax.eval_shape(learner.init, jax.random.PRNGKey(0))
  support = _split(1, 4)
  with pytest.raises(ValueError, match=r"anp: the target points' x has shape \(3, 2\); expected \[points, 1\]"):
    jax.eval_shape(lambda p: learner.predict(learner.adapt(p, support), jnp.zeros((3, 2))), params)
  with pytest.raises(ValueError, match=r"the context points' y has shape \(4, 2\); expected \[points, 1\]"):
    jax.eval_shape(lambda p: learner.adapt(p, support._replace(y=jnp.zeros((4, 2)))), params)
  bad = Task(support, Split(jnp.zeros((3, 2)), jnp.zeros((3, 1))))
  with pytest.raises(ValueError, match=r"the target points' x has shape \(3, 2\); expected \[points, 1\]: context "
                     "and target points must both have the model's x features"):
    jax.eval_shape(lambda p: learner.loss(p, bad), params)


def test_registry_builds_each_neural_process_on_gp_and_sinusoid():
  for algo in ('cnp', 'np', 'anp'):
    for dataset, shape in (('gp', (50, 32, 2)), ('sinusoid', (100, 1))):
      e = experiments.build(experiments.Config(algo, dataset))
      assert e.metric == ('log_likelihood' if dataset == 'gp' else 'mse')
      params = jax.eval_shape(e.init_model, jax.random.PRNGKey(0))
      task = jax.eval_shape(e.test_tasks, jax.random.PRNGKey(0))
      out = jax.eval_shape(lambda p, t: e.test_learner.predict(e.test_learner.adapt(p, t.support), t.query.x),
                           params, task)
      want = (50, 2) if algo == 'cnp' and dataset == 'gp' else shape
      assert out.shape == want, (algo, dataset, out.shape)
  c = experiments.resolve(experiments.Config('anp', 'gp'))
  assert (c.meta_batch, c.outer_lr, c.random_kernel, c.context_max, c.max_points) == (16, 1e-4, True, 49, 49)
  c = experiments.resolve(experiments.Config('cnp', 'gp'))
  assert (c.meta_batch, c.outer_lr, c.random_kernel, c.context_max, c.extra_max) == (64, 1e-4, False, 9, 9)
  with pytest.raises(ValueError, match='context_min <= context_max'):
    experiments.resolve(experiments.Config('cnp', 'gp', context_min=5, context_max=4))
  with pytest.raises(ValueError, match=r'anp: hidden \(12\) must be a multiple of heads \(8\)'):
    experiments.resolve(experiments.Config('anp', 'gp', hidden=12))


def test_init_params_compiles_once_for_equal_model_settings(caplog):
  """Equal models (separate objects, settings no other test uses) share one compiled program, which gives the
  same parameters for the same key."""
  keys = [jax.random.PRNGKey(i) for i in (0, 1, 0)]  # made here: their ops compile too
  with jax.log_compiles(), caplog.at_level(logging.WARNING):
    a, b, again = [init_params(NeuralProcess(hidden=3, encoder_layers=2, decoder_layers=1), k) for k in keys]
  compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Compiling ')]
  assert len(compiled) == 1 and compiled[0].startswith('Compiling jit(init_params)'), compiled
  chex.assert_trees_all_equal(a, again)
  chex.assert_trees_all_equal_shapes(a, b)
  assert not np.array_equal(a['params']['decoder']['head']['kernel'], b['params']['decoder']['head']['kernel'])
