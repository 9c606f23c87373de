"""Sequence learners: memory-augmented networks (Santoro et al., 2016, arXiv:1605.06065) and their LSTM baseline.

Such a learner adapts without gradient steps: it reads a label-offset `jmeta.SequenceTask` one step at a time, the
label of step `t` arriving as an input at step `t + 1`, and learns the episode's classes in its recurrent state
(an LSTM's cells, an external memory). Meta-training is plain backpropagation through the whole sequence.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jmeta import losses
from jmeta.base import MetaLearner, Metrics, Params
from jmeta.sequences import SequenceTask, check_sequence_task, shifted_labels

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
    classes: labels per episode, the width of `previous` and of the logits.

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
    value = losses.cross_entropy(logits, task.labels)
    return value, {'loss': value, 'accuracy': losses.accuracy(logits, task.labels)}

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


def init_params(module, key: jax.Array, example_x: jax.Array) -> Params:
  """The module's parameters for inputs shaped like one step's `example_x`."""
  return module.init(key, module.initial_carry(), example_x, jnp.zeros((module.classes,), jnp.float32))
