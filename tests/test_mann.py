"""Sequence learners (jmeta.algorithms.mann) over label-offset episodes: scan against loops, causality, batching."""

import functools
import logging

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmeta
from jmeta.algorithms.mann import init_params, mann
from jmeta.datasets import label_sequences
from jmeta.models.recurrent import LSTMClassifier, MANNClassifier
from jmeta.sequences import SequenceTask, accuracy_by_instance, instance_numbers

WAYS, SHOTS = 3, 4
MODELS = {'mann': MANNClassifier(WAYS, hidden=8, slots=6, width=4, heads=2),
          'mann_ntm': MANNClassifier(WAYS, hidden=8, slots=6, width=4, heads=2, addressing='ntm'),
          'lstm': LSTMClassifier(WAYS, hidden=8)}


def _sampler():
  images = jax.random.uniform(jax.random.PRNGKey(0), (7, 5, 4, 4, 1))
  return label_sequences(images, WAYS, SHOTS)


@functools.lru_cache(maxsize=None)  # one learner per model, whose jitted functions the tests then share
def _setup(name):
  module = MODELS[name]
  sample = _sampler()
  task = jax.tree.map(np.asarray, jax.jit(sample)(jax.random.PRNGKey(1)))  # NumPy: slicing it compiles nothing
  return module, mann(module), init_params(module, jax.random.PRNGKey(2), task.inputs[0]), sample, task


def test_instance_numbers_and_accuracy_by_instance_on_a_hand_made_sequence():
  labels = jnp.array([2, 0, 2, 1, 0, 2])
  np.testing.assert_array_equal(instance_numbers(labels), [1, 1, 2, 1, 2, 3])
  logits = jax.nn.one_hot(jnp.array([1, 0, 2, 1, 1, 2]), 3)  # right at steps 1, 2, 3, 5
  np.testing.assert_allclose(accuracy_by_instance(logits, labels, (1, 2, 3, 4)), [2 / 3, 1 / 2, 1.0, 0.0])


@pytest.mark.parametrize('name', sorted(MODELS))
def test_scan_equals_a_python_loop_and_the_label_of_a_step_is_unseen_until_the_next(name):
  module, learner, params, _, task = _setup(name)
  predict = jax.jit(learner.predict)
  logits = predict(learner.adapt(params), task)
  carry, previous, loop = module.initial_carry(), jmeta.shifted_labels(task.labels, WAYS), []
  step = jax.jit(module.apply)
  for t in range(WAYS * SHOTS):
    carry, out = step(params, carry, task.inputs[t], previous[t])
    loop.append(out)
  np.testing.assert_allclose(logits, np.stack(loop), rtol=1e-5, atol=1e-6)

  t = 5  # another label at step t changes the logits from step t + 1 on, never before
  labels = task.labels.copy()
  labels[t] = (labels[t] + 1) % WAYS
  other = predict(learner.adapt(params), task._replace(labels=labels, previous=None))
  np.testing.assert_array_equal(other[:t + 1], logits[:t + 1])
  assert not np.allclose(other[t + 1:], logits[t + 1:])


def test_adapting_on_a_prefix_then_predicting_the_rest_equals_one_pass():
  _, learner, params, _, task = _setup('mann')
  k = 7
  whole = jax.jit(learner.predict)(learner.adapt(params), task)
  head, tail = (jax.tree.map(lambda a: a[sl], task) for sl in (slice(None, k), slice(k, None)))
  rest = jax.jit(lambda p, head, tail: learner.predict(learner.adapt(p, head), tail))(params, head, tail)
  np.testing.assert_allclose(rest, whole[k:], rtol=1e-5, atol=1e-6)


def test_meta_step_on_a_batch_of_sequences_is_the_mean_of_the_per_episode_gradients():
  """Also when it differentiates the mean loss (`grad_of_mean`), in one vmap or in chunks."""
  _, learner, params, sample, task = _setup('lstm')
  batch = jax.tree.map(np.asarray, jax.jit(lambda k: jax.vmap(sample)(jax.random.split(k, 3)))(jax.random.PRNGKey(3)))
  grad = jax.jit(learner.meta_grad)
  per_episode = [grad(params, jax.tree.map(lambda a: a[i], batch))[0] for i in range(3)]
  mean = jax.tree.map(lambda *g: sum(g) / 3, *jax.tree.map(np.asarray, per_episode))
  opt = optax.sgd(1.0)
  state = jax.jit(lambda k, p: jmeta.init_state(learner, opt, k, p))(jax.random.PRNGKey(4), params)
  spec = jmeta.task_spec(task)
  for kwargs in ({}, {'grad_of_mean': True}, {'grad_of_mean': True, 'vmap_size': 2}):
    new, metrics = jax.jit(jmeta.meta_step(learner, opt, spec, **kwargs))(state, batch)
    chex.assert_trees_all_close(jax.tree.map(lambda p, n: np.asarray(p) - np.asarray(n), state.params, new.params),
                                mean, rtol=1e-5, atol=1e-7)
    assert set(metrics) == {'loss', 'accuracy', 'grad_norm'}
  with pytest.raises(ValueError, match='Did you pass a single task'):
    jmeta.meta_step(learner, opt, spec)(state, task)


def test_labels_wider_than_the_learner_are_refused():
  _, learner, params, _, task = _setup('lstm')
  wide = task._replace(previous=jnp.zeros((WAYS * SHOTS, WAYS + 2)))
  with pytest.raises(ValueError, match=r'previous must be the shifted one-hot labels \[steps, classes\] = \[12, 3\]'):
    learner.loss(params, wide)
  with pytest.raises(ValueError, match="addressing must be 'lrua' or 'ntm'"):
    init_params(MANNClassifier(WAYS, addressing='dnc'), jax.random.PRNGKey(0), task.inputs[0])


def test_mann_learns_label_offset_episodes_of_fresh_classes():
  """A small MANN on episodes of 3 classes drawn from 40 random 6-pixel patterns, each shown 3 times, 2,500 Adam
  steps (about 10 s): the second time a pattern comes it names it right about 0.9 of the time, well above its
  first time (at most 0.61 there: (1/3 + 1/2 + 1) / 3 by elimination of the labels already given)."""
  module = MANNClassifier(WAYS, hidden=32, slots=16, width=8, heads=1)
  images = jax.random.bernoulli(jax.random.PRNGKey(5), 0.5, (40, 1, 6)).astype(jnp.float32)
  once = label_sequences(images, WAYS, 1)
  sample = jax.tree_util.Partial(lambda key: _repeat(once, key))
  learner = mann(module)
  opt = optax.adam(1e-2)
  step = jmeta.meta_step(learner, opt, grad_of_mean=True)

  @jax.jit  # one program each for training and testing: run eagerly, their setup compiled ~200 small ones
  def train():
    params = init_params(module, jax.random.PRNGKey(7), sample(jax.random.PRNGKey(0)).inputs[0])
    state = jmeta.init_state(learner, opt, jax.random.PRNGKey(6), params)
    return jmeta.training.sampled_steps(step, sample, 16, 2500)(state)[0].params

  @jax.jit
  def held_out(params):
    batch = jax.vmap(sample)(jax.random.split(jax.random.PRNGKey(8), 200))
    logits = jax.vmap(lambda t: learner.predict(learner.adapt(params), t))(batch)
    return jnp.mean(jax.vmap(lambda l, y: accuracy_by_instance(l, y, (1, 2, 3)))(logits, batch.labels), 0)

  by_instance = held_out(train())
  assert by_instance[1] > 0.8 and by_instance[2] > 0.8 and by_instance[1] > by_instance[0] + 0.25, by_instance


def _repeat(sample, key):
  """Each of the episode's 3 patterns shown 3 times, in a random order."""
  once = sample(key)
  order = jax.random.permutation(jax.random.fold_in(key, 1), 3 * WAYS)
  inputs, labels = jnp.tile(once.inputs, (3, 1))[order], jnp.tile(once.labels, 3)[order]
  return SequenceTask(inputs, labels, jmeta.shifted_labels(labels, WAYS))


def test_evaluator_scores_sequences_by_instance_as_a_loop_over_episodes():
  _, learner, params, sample, _ = _setup('lstm')
  scores = jmeta.evaluator(learner, sample, accuracy_by_instance, batch_size=4, vmap_size=2)(
      params, jax.random.PRNGKey(9), 6)
  @jax.jit
  def score(key):
    t = sample(key)
    return accuracy_by_instance(learner.predict(learner.adapt(params), t), t.labels)

  loop = [score(jax.random.fold_in(jax.random.PRNGKey(9), i)) for i in range(6)]
  np.testing.assert_allclose(scores, np.stack(loop), rtol=1e-6)
  assert scores.shape == (6, 6)
  with pytest.raises(ValueError, match='sequence learners adapt by reading the sequence'):
    jmeta.evaluator(learner, sample, accuracy_by_instance, steps=3)


def test_string_labels_train_one_softmax_per_character():
  images = jax.random.uniform(jax.random.PRNGKey(0), (7, 5, 4, 4, 1))
  sample = label_sequences(images, WAYS, SHOTS, labels='string')
  module = LSTMClassifier(25, hidden=8)
  learner = mann(module)
  task = jax.jit(sample)(jax.random.PRNGKey(1))
  params = init_params(module, jax.random.PRNGKey(2), task.inputs[0])
  (loss, metrics), logits = jax.jit(lambda p, t: (learner.loss(p, t), learner.predict(learner.adapt(p), t)))(params,
                                                                                                           task)
  per_char = optax.softmax_cross_entropy_with_integer_labels(logits.reshape(-1, 5, 5), task.labels)
  np.testing.assert_allclose(loss, per_char.sum(1).mean(), rtol=1e-6)
  hits = np.all(np.asarray(logits).reshape(-1, 5, 5).argmax(-1) == np.asarray(task.labels), axis=1)
  np.testing.assert_allclose(metrics['accuracy'], hits.mean())


def test_init_params_compiles_once_for_equal_module_settings(caplog):
  """Equal modules (separate objects, settings no other test uses) and equal shapes share one compiled program,
  which gives the same parameters for the same key."""
  make = lambda: MANNClassifier(WAYS, hidden=5, slots=3, width=2, heads=1)  # noqa: E731
  keys, x = [jax.random.PRNGKey(i) for i in (0, 1, 0)], jnp.zeros((7,))  # made here: their ops compile too
  with jax.log_compiles(), caplog.at_level(logging.WARNING):
    a, b, again = [init_params(make(), k, x) for k in keys]
  compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Compiling ')]
  assert len(compiled) == 1 and compiled[0].startswith('Compiling jit(init_params)'), compiled
  chex.assert_trees_all_equal(a, again)
  chex.assert_trees_all_equal_shapes(a, b)
  assert not np.array_equal(a['params']['head']['kernel'], b['params']['head']['kernel'])
