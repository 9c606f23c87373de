"""Sequence learners: memory-augmented networks (Santoro et al., 2016, arXiv:1605.06065) and their LSTM baseline.

Such a learner adapts without gradient steps: it reads a label-offset `jmeta.SequenceTask` one step at a time, the
label of step `t` arriving as an input at step `t + 1`, and learns the episode's classes in its recurrent state
(an LSTM's cells, an external memory). Meta-training is plain backpropagation through the whole sequence.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jmeta.base import MetaLearner, Metrics, Params
from jmeta.experiments import Published
from jmeta.sequences import (SequenceTask, check_sequence_task, sequence_accuracy, sequence_cross_entropy,
                             shifted_labels)

Carry = Any
StepFn = Callable[[Params, Carry, jax.Array, jax.Array], tuple[Carry, jax.Array]]
"""`step(params, carry, x_t, previous_t) -> (carry, logits_t)`: one step of a recurrent classifier."""


class SequenceState(NamedTuple):
  """What `adapt` returns: the parameters and the recurrent state after reading a prefix of the episode."""
  params: Params
  carry: Carry


def sequence_learner(step_fn: StepFn, initial_carry: Carry, classes: int) -> MetaLearner:
  """A `MetaLearner` over `SequenceTask`s from one step of a recurrent classifier.

  Args:
    step_fn: `(params, carry, x_t [*input_shape], previous_t [classes]) -> (carry, logits_t [classes])`, e.g.
      `lambda p, c, x, y: module.apply(p, c, x, y)` for `jmeta.models.MANNClassifier` or `LSTMClassifier`.
    initial_carry: the carry at the start of every episode (`module.initial_carry()`).
    classes: the width of `previous` and of the logits: the labels per episode, or `chars * letters` for string
      labels `[steps, chars]` (each character its own softmax over `letters`).

  Returns:
    `init(key, model_params)` returns the model's parameters; `adapt(params, prefix=None)` a `SequenceState`
    after reading `prefix` (a `SequenceTask`, or nothing); `predict(state, sequence) -> [steps, classes]` logits,
    in one `lax.scan` from that state; `loss(params, task) -> (loss, {'loss', 'accuracy'})`, the mean
    cross-entropy over the steps of the whole episode read from the initial carry; `meta_grad = jax.grad(loss)`.
    A task whose `previous` is None gets `shifted_labels(labels, classes)`.
  """

  def previous(task: SequenceTask) -> jax.Array:
    return task.previous if task.previous is not None else shifted_labels(task.labels, classes)

  def run(params: Params, carry: Carry, task: SequenceTask) -> tuple[Carry, jax.Array]:
    check_sequence_task(task, classes)
    return jax.lax.scan(lambda c, inputs: step_fn(params, c, *inputs), carry, (task.inputs, previous(task)))

  def adapt(params: Params, prefix: SequenceTask | None = None) -> SequenceState:
    carry = initial_carry
    if prefix is not None:
      carry, _ = run(params, carry, prefix)
    return SequenceState(params, carry)

  def predict(state: SequenceState, sequence: SequenceTask) -> jax.Array:
    return run(state.params, state.carry, sequence)[1]

  def loss(params: Params, task: SequenceTask) -> tuple[jax.Array, Metrics]:
    logits = predict(adapt(params), task)
    value = sequence_cross_entropy(logits, task.labels)
    return value, {'loss': value, 'accuracy': sequence_accuracy(logits, task.labels)}

  def meta_grad(params: Params, task: SequenceTask) -> tuple[Params, Metrics]:
    return jax.grad(loss, has_aux=True)(params, task)

  return MetaLearner(init=lambda key, model_params: model_params, adapt=adapt, predict=predict, loss=loss,
                     meta_grad=meta_grad)


def mann(module, classes: int | None = None) -> MetaLearner:
  """`sequence_learner` of a Flax recurrent classifier (`jmeta.models.MANNClassifier`, `LSTMClassifier`, or any
  module with `initial_carry()` and `__call__(carry, x, previous) -> (carry, logits)`)."""
  classes = module.classes if classes is None else classes
  return sequence_learner(lambda params, carry, x, prev: module.apply(params, carry, x, prev),
                          module.initial_carry(), classes)


@functools.partial(jax.jit, static_argnames='module')
def init_params(module, key: jax.Array, example_x: jax.Array) -> Params:
  """The module's parameters for inputs shaped like one step's `example_x`. One compiled program per module
  setting and input shape (the module is a static argument), reused by every call."""
  return module.init(key, module.initial_carry(), example_x, jnp.zeros((module.classes,), jnp.float32))


def _unit_interval(value, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
    raise ValueError(f'{name} must be a number in (0, 1]; got {value!r}')
  return float(value)


def _recipe(make_module):
  """A registry `build` for a recurrent classifier made by `make_module(config)`; trains and tests at `ways`."""

  def build(c, data):
    from jmeta.experiments import Recipe
    module = make_module(c)
    learner = mann(module)
    return Recipe(lambda key: init_params(module, key, data.example_x[0]), learner, learner)

  return build


def _register() -> None:
  from jmeta.datasets.sequences import label_width
  from jmeta.experiments import Algorithm, Option, register_algorithm
  from jmeta.models.recurrent import LSTMClassifier, MANNClassifier
  # Santoro et al. (2016), section 4.1 and appendix: episodes in meta-batches of 16, RMSProp at 1e-4 with decay 0.95
  # and momentum 0.9, 100,000 episodes.
  published = {'omniglot-sequences': dict(meta_batch=16, steps=100_000, outer_opt='rmsprop', outer_lr=1e-4)}
  hidden = Option('hidden', 'controller (LSTM) units (default 200, as the paper)', default=200)
  register_algorithm(Algorithm(
      name='mann', family='memory-based', title='memory-augmented neural networks',
      paper='Santoro, Bartunov, Botvinick, Wierstra & Lillicrap, 2016, arXiv:1605.06065',
      options=(
          hidden,
          Option('slots', 'memory slots (default 128)', default=128),
          Option('width', 'memory width (default 40)', default=40),
          Option('heads', 'read heads (and LRUA write heads) (default 4)', default=4),
          Option('addressing', "'lrua' (least recently used access, the paper's) or 'ntm' (Graves et al., 2014)",
                 str, default='lrua', choices=('lrua', 'ntm')),
          Option('gamma', "LRUA's usage decay in (0, 1] (default 0.95)", float, default=0.95,
                 validate=_unit_interval),
          Option('learn_strength', 'sharpen LRUA reads by a learned strength, as NTM reads (the paper does not)',
                 bool, default=False, flag='--learn-strength'),
      ),
      published=published,
      build=_recipe(lambda c: MANNClassifier(label_width(c.ways, c.labels), c.hidden, c.slots, c.width, c.heads,
                                             c.addressing, c.gamma, c.learn_strength)),
      fixed_ways=True, grad_of_mean=True,
      # Santoro et al. (2016), table 1: 5 classes, one-hot labels, accuracy at the 2nd and 10th instance.
      results=(Published('omniglot-sequences', {'ways': 5, 'instance': 2}, 'accuracy %', 82.8,
                         'Santoro et al. (2016), table 1'),
               Published('omniglot-sequences', {'ways': 5, 'instance': 10}, 'accuracy %', 98.1,
                         'Santoro et al. (2016), table 1'))))
  register_algorithm(Algorithm(
      name='lstm', family='memory-based', title='the LSTM baseline of memory-augmented networks',
      paper='Santoro et al., 2016, arXiv:1605.06065 (baseline)',
      options=(hidden,), published=published,
      build=_recipe(lambda c: LSTMClassifier(label_width(c.ways, c.labels), c.hidden)), fixed_ways=True,
      grad_of_mean=True,
      results=(Published('omniglot-sequences', {'ways': 5, 'instance': 2}, 'accuracy %', 49.5,
                         'Santoro et al. (2016), table 1'),
               Published('omniglot-sequences', {'ways': 5, 'instance': 10}, 'accuracy %', 62.5,
                         'Santoro et al. (2016), table 1'))))


_register()
