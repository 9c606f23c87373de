"""Sequence tasks: examples shown one at a time, each step's label given as an input at the next step.

Memory-augmented networks learn a task inside one forward pass (Santoro et al., 2016, arXiv:1605.06065): at step
`t` the learner sees input `x_t` with the label of step `t - 1`, and must predict the label of `x_t`. Such a task
has no support and query sets: the sequence is both, so a sequence learner keeps the `MetaLearner` interface with
`adapt(params, prefix) -> state` (its memory after reading a prefix of the sequence, for one-shot evaluation) and
`predict(state, sequence) -> [steps, classes]` logits for a whole `SequenceTask` in one `lax.scan`, the labels it
may read being the shifted ones. The sampler over a dataset array is `jmeta.datasets.label_sequences`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class SequenceTask(NamedTuple):
  """One episode in time order.

  Attributes:
    inputs: `[steps, *input_shape]`, the example shown at each step.
    labels: `[steps]` int, the class of each step's example, what the learner predicts; or `[steps, chars]` int,
      a string label of `chars` characters per step (Santoro et al.'s five-character strings), each character
      predicted by its own softmax.
    previous: `[steps, classes]`, the one-hot label of the previous step (zeros at step 0), the input the learner
      reads beside `inputs[t]` (`shifted_labels(labels, classes)`); for string labels `[steps, chars * letters]`,
      one one-hot per character. None when the learner builds it itself.

  A batch of episodes adds a leading axis to every leaf, as `jax.vmap` of a sampler gives.
  """
  inputs: jax.Array
  labels: jax.Array
  previous: jax.Array | None = None


def shifted_labels(labels: jax.Array, classes: int) -> jax.Array:
  """The one-hot label of the previous step, zeros at step 0: `[steps]` int -> `[steps, classes]` float32.

  Row `t` is `one_hot(labels[t - 1])` for `t >= 1`, so a learner reading it at step `t` never sees `labels[t]`.
  String labels `[steps, chars]` give `[steps, classes]` with `classes = chars * letters`: one one-hot of `letters`
  per character, concatenated.
  """
  if jnp.ndim(labels) not in (1, 2):
    raise ValueError(f'shifted_labels: labels must be [steps] or [steps, chars]; got shape {jnp.shape(labels)}')
  steps = labels.shape[0]
  if jnp.ndim(labels) == 2:
    chars = labels.shape[1]
    if classes % chars:
      raise ValueError(f'shifted_labels: {classes} label inputs do not split into {chars} characters')
    one_hot = jax.nn.one_hot(labels, classes // chars, dtype=jnp.float32).reshape(steps, classes)
  else:
    one_hot = jax.nn.one_hot(labels, classes, dtype=jnp.float32)
  return jnp.concatenate([jnp.zeros((1, classes), jnp.float32), one_hot[:-1]])


def _per_character(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """`logits [steps, chars * letters]` as `[steps, chars, letters]` for string labels `[steps, chars]`."""
  chars = labels.shape[1]
  if logits.shape[-1] % chars:
    raise ValueError(f'{logits.shape[-1]} logits per step do not split into {chars} characters')
  return logits.reshape(*logits.shape[:-1], chars, logits.shape[-1] // chars)


def sequence_hits(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """`[steps]` bool: the step's label predicted right (every character of a string label)."""
  if labels.ndim == 1:
    return jnp.argmax(logits, axis=-1) == labels
  return jnp.all(jnp.argmax(_per_character(logits, labels), axis=-1) == labels, axis=-1)


def sequence_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean over steps of the cross-entropy of each step's label; for string labels, summed over the characters."""
  if labels.ndim == 1:
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  per_char = optax.softmax_cross_entropy_with_integer_labels(_per_character(logits, labels), labels)
  return jnp.mean(jnp.sum(per_char, axis=-1))


def sequence_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The share of steps whose label is predicted right (all characters of a string label)."""
  return jnp.mean(sequence_hits(logits, labels).astype(jnp.float32))


def check_sequence_task(task: SequenceTask, classes: int | None = None, name: str = 'task') -> int:
  """Raises `ValueError` unless `task` is one well-formed sequence task; returns its number of steps.

  Checks shapes and dtypes only (so it works on tracers at trace time): `inputs [steps, ...]`, integer
  `labels [steps]` (or string labels `[steps, chars]`) and, if present, `previous [steps, classes]` (`classes`
  compared when given).
  """
  if not isinstance(task, SequenceTask):
    raise ValueError(f'{name} must be a jmeta.SequenceTask(inputs, labels, previous); got {type(task).__name__}')
  xs, ys = tuple(np.shape(task.inputs)), tuple(np.shape(task.labels))
  if len(xs) < 1 or len(ys) not in (1, 2) or xs[0] != ys[0]:
    raise ValueError(f'{name}: expected inputs [steps, *input_shape] and labels [steps] (or [steps, chars]); got '
                     f'inputs {list(xs)}, labels {list(ys)}')
  if not jnp.issubdtype(jnp.result_type(task.labels), jnp.integer):
    raise ValueError(f'{name}: labels must be integer classes; got dtype {jnp.result_type(task.labels)}')
  if task.previous is not None:
    ps = tuple(np.shape(task.previous))
    want = classes if classes is not None else (ps[1] if len(ps) == 2 else 'classes')
    if len(ps) != 2 or ps[0] != ys[0] or (classes is not None and ps[1] != classes):
      raise ValueError(f'{name}: previous must be the shifted one-hot labels [steps, classes] = [{ys[0]}, {want}]; '
                       f'got {list(ps)}')
  return ys[0]


def instance_numbers(labels: jax.Array) -> jax.Array:
  """`[steps]` int: at step `t`, how many times `labels[t]` has been shown up to and including step `t` (1 at a
  class's first example, 2 at its second...), the x-axis of Santoro et al.'s accuracy by instance."""
  if jnp.ndim(labels) not in (1, 2):
    raise ValueError(f'instance_numbers: labels must be [steps] or [steps, chars]; got shape {jnp.shape(labels)}')
  same = labels[:, None] == labels[None, :]
  if labels.ndim == 2:
    same = jnp.all(same, axis=-1)
  earlier_or_now = jnp.tril(jnp.ones((labels.shape[0],) * 2, jnp.bool_))
  return jnp.sum(same & earlier_or_now, axis=1).astype(jnp.int32)


def accuracy_by_instance(logits: jax.Array, labels: jax.Array, instances=(1, 2, 3, 4, 5, 10)) -> jax.Array:
  """`[len(instances)]`: accuracy over the steps showing the k-th example of their class, for each k in `instances`
  (Santoro et al., 2016, Table 1); 0 where no step shows a k-th example. `logits: [steps, classes]`, labels
  `[steps]` (or string labels `[steps, chars]`, right when every character is)."""
  if logits.ndim != 2 or labels.ndim not in (1, 2) or labels.shape[:1] != logits.shape[:1]:
    raise ValueError(f'accuracy_by_instance: expected logits [steps, classes] and labels [steps] (or [steps, '
                     f'chars]); got {logits.shape} and {labels.shape}')
  hits = sequence_hits(logits, labels).astype(jnp.float32)
  numbers = instance_numbers(labels)
  masks = numbers[None, :] == jnp.asarray(instances)[:, None]
  return jnp.sum(masks * hits, axis=1) / jnp.maximum(jnp.sum(masks, axis=1), 1)
