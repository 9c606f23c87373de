"""MetaGAN against hand-computed losses, float64 finite differences and one optimizer step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jmeta.algorithms.metagan import (MetaGANParams, calibrated_fake_logit, metagan, real_log_probs,
                                      task_generator)
from jmeta.algorithms.protonet import protonet
from jmeta.tasks import Split, Task

WAYS, IN = 3, 4


def linear(params, x):
  return jnp.reshape(x, (x.shape[0], -1)) @ params['w']


def fixed_fakes(params, key, support_x, count):
  """A 'generator' whose fakes are its parameters, so the loss can be computed by hand."""
  del key, support_x
  return params['fakes'][:count]


def small_task(seed=0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  labels = np.arange(WAYS)
  return Task(Split(rng.normal(size=(WAYS, IN)).astype(dtype), labels),
              Split(rng.normal(size=(2 * WAYS, IN)).astype(dtype), np.tile(labels, 2)))


def test_generator_output_shapes_range_and_conditioning():
  gen = task_generator((5, 6, 2), hidden=16, code=8, noise_dim=4)
  support = jax.random.uniform(jax.random.PRNGKey(0), (3, 5, 6, 2))
  params = jax.jit(gen.init)(jax.random.PRNGKey(1), support)
  generate = jax.jit(gen.generate, static_argnums=3)
  fakes = generate(params, jax.random.PRNGKey(2), support, 7)
  assert fakes.shape == (7, 5, 6, 2) and fakes.dtype == support.dtype
  assert bool(jnp.all((fakes > 0) & (fakes < 1)))
  np.testing.assert_array_equal(fakes, generate(params, jax.random.PRNGKey(2), support, 7))  # same key
  assert not np.allclose(fakes, generate(params, jax.random.PRNGKey(3), support, 7))  # new noise
  assert not np.allclose(fakes, generate(params, jax.random.PRNGKey(2), 1 - support, 7))  # another task
  with pytest.raises(ValueError, match=r'support examples have shape \(5, 6\), expected \(5, 6, 2\)'):
    gen.generate(params, jax.random.PRNGKey(2), support[..., 0], 7)


def test_real_probability_with_a_fake_class_logit_by_hand():
  logits, b = jnp.asarray([[1.0, 2.0], [-3.0, 0.5]]), 0.25
  log_d, log_not_d = real_log_probs(logits, b)
  z = np.exp([[1.0, 2.0], [-3.0, 0.5]]).sum(1)
  np.testing.assert_allclose(np.exp(log_d), z / (z + np.exp(b)), rtol=1e-6)
  np.testing.assert_allclose(np.exp(log_not_d), np.exp(b) / (z + np.exp(b)), rtol=1e-6)


def test_loss_adds_the_real_and_fake_terms_as_the_formula_says():
  with jax.enable_x64():
    task = small_task()
    rng = np.random.default_rng(1)
    w, fakes = rng.normal(size=(IN, 2)), rng.normal(size=(5, IN))
    base = protonet(linear, WAYS)
    learner = metagan(base, fixed_fakes, fakes=4, gan_weight=0.7)
    params = learner.init(None, MetaGANParams({'w': w}, {'fakes': fakes}, jnp.asarray(-1.5)))
    loss, metrics = jax.jit(learner.loss)(params, task)

    def logits(x):  # ProtoNets by hand: negative squared distances to the class means of the support embeddings
      protos = np.stack([(task.support.x[task.support.y == c] @ w).mean(0) for c in range(WAYS)])
      return -(((x @ w)[:, None] - protos[None]) ** 2).sum(-1)

    def log_softmax(l):
      return l - np.log(np.exp(l).sum(-1, keepdims=True))

    real, fake, b = logits(task.query.x), logits(fakes[:4]), -1.5
    supervised = -np.mean(log_softmax(real)[np.arange(len(real)), task.query.y])
    # The (ways + 1)-class view: real queries labelled 'real', fakes labelled 'fake' (logit b).
    d_real = np.exp(real).sum(1) / (np.exp(real).sum(1) + np.exp(b))
    d_fake = np.exp(fake).sum(1) / (np.exp(fake).sum(1) + np.exp(b))
    discriminator = -np.mean(np.log(d_real)) - np.mean(np.log(1 - d_fake))
    np.testing.assert_allclose(metrics['supervised_loss'], supervised, rtol=1e-10)
    np.testing.assert_allclose(metrics['discriminator_loss'], discriminator, rtol=1e-10)
    np.testing.assert_allclose(loss, supervised + 0.7 * discriminator, rtol=1e-10)
    np.testing.assert_allclose(metrics['generator_loss'], -np.mean(np.log(d_fake)), rtol=1e-10)


def test_each_player_gets_the_gradient_of_its_own_loss():
  """Against float64 central differences: the classifier's gradient (its weights and the fake logit) of the
  classifier's loss, the generator's gradient of the generator's loss."""
  with jax.enable_x64():
    task = small_task(2)
    rng = np.random.default_rng(3)
    learner = metagan(protonet(linear, WAYS), fixed_fakes, fakes=3)
    params = learner.init(None, MetaGANParams({'w': rng.normal(size=(IN, 2))}, {'fakes': rng.normal(size=(3, IN))},
                                              jnp.asarray(0.3)))
    grads, _ = jax.jit(learner.meta_grad)(params, task)
    loss = jax.jit(learner.loss)
    flat = lambda p: np.concatenate([np.ravel(a) for a in jax.tree.leaves(p)])
    for part, objective in (('learner', 'loss'), ('fake_logit', 'loss'), ('generator', 'generator_loss')):
      direction = jax.tree.map(lambda a: rng.normal(size=np.shape(a)), getattr(params, part))
      along = lambda e: loss(params._replace(**{part: jax.tree.map(
          lambda a, d: a + e * d, getattr(params, part), direction)}), task)[1][objective]
      fds = [(along(e) - along(-e)) / (2 * e) for e in (1e-4, 1e-5, 1e-6)]
      np.testing.assert_allclose(fds[1], fds[2], rtol=1e-6)  # converged
      np.testing.assert_allclose(flat(getattr(grads, part)) @ flat(direction), fds[1], rtol=1e-6)


def test_one_training_step_changes_both_players():
  task = small_task(4, np.float32)
  gen = task_generator((IN,), hidden=8, code=4, noise_dim=3)
  base = protonet(linear, WAYS)
  learner = metagan(base, gen.generate, fakes=6)
  model = {'w': jax.random.normal(jax.random.PRNGKey(0), (IN, 2))}
  b = jax.jit(lambda m: calibrated_fake_logit(base, base.init(None, m), task))(model)
  params = learner.init(None, MetaGANParams(model, jax.jit(gen.init)(jax.random.PRNGKey(1), task.support.x), b))
  grads, metrics = jax.jit(learner.meta_grad)(params, task)
  assert 0.3 < float(metrics['real_prob_of_real']) < 0.7  # calibrated: about 1/2 on real queries
  opt = optax.adam(1e-2)
  new = jax.jit(lambda p, g: optax.apply_updates(p, opt.update(g, opt.init(p), p)[0]))(params, grads)
  for part in MetaGANParams._fields:
    before, after = jax.tree.leaves(getattr(params, part)), jax.tree.leaves(getattr(new, part))
    assert all(np.all(np.isfinite(a)) for a in after)
    assert any(not np.allclose(x, y) for x, y in zip(before, after)), part


def test_bad_settings_are_refused():
  with pytest.raises(ValueError, match='fakes must be a positive int'):
    metagan(protonet(linear, WAYS), fixed_fakes, fakes=0)
  with pytest.raises(ValueError, match='init takes MetaGANParams'):
    metagan(protonet(linear, WAYS), fixed_fakes, fakes=2).init(None, {'w': np.zeros((IN, 2))})
