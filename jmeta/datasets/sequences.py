"""Label-offset episodes for memory-augmented learners, drawn on the device as pure functions of a PRNG key."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jmeta.checks import check_positive_int
from jmeta.datasets.episodes import _check_key, _choice
from jmeta.sequences import SequenceTask, shifted_labels


def label_sequences(images: jax.Array, ways: int, shots: int) -> Callable[[jax.Array], SequenceTask]:
  """A sampler of label-offset sequences: `sample(key) -> SequenceTask`, pure, for `jax.jit` and `jax.vmap`.

  Each episode draws `ways` distinct classes and `shots` distinct examples of each, and shows the `ways * shots`
  examples in a uniformly random time order. Labels are a fresh random assignment per episode: the classes are
  drawn in a uniformly random order (`_choice`) and class `i` of the draw gets label `i`, which is a uniformly
  random bijection from the drawn classes onto `0..ways-1`, so no label means a fixed class across episodes. The
  task's `previous` holds the one-hot label of the step before, zeros at step 0. This is the protocol of Santoro et
  al. (2016, arXiv:1605.06065), who use Omniglot with `ways=5, shots=10` (50 steps) and one-hot labels.

  Like `jmeta.datasets.episodes`, the sampler is a `jax.tree_util.Partial` holding `images` as a leaf, so a jitted
  function taking it as an argument receives the dataset as a device buffer.

  Args:
    images: `[classes, examples_per_class, *example_shape]`, e.g. `[classes, 20, 28, 28, 1]` for Omniglot.
    ways: classes per episode, `1 <= ways <= classes`.
    shots: examples per class in the sequence, `1 <= shots <= examples_per_class`.

  Returns:
    `sample(key) -> SequenceTask` with inputs `[ways * shots, *example_shape]`, labels `[ways * shots]` int32 in
    `0..ways-1`, each `shots` times, and previous `[ways * shots, ways]` float32.

  Raises:
    ValueError: at construction, for non-positive counts, `images` of rank below 2, `ways` above the number of
      classes, or `shots` above the examples per class.
  """
  ways, shots = check_positive_int(ways, 'ways'), check_positive_int(shots, 'shots')
  shape = tuple(jnp.shape(images))
  if len(shape) < 2:
    raise ValueError(f'images must be [classes, examples_per_class, *example_shape]; got shape {shape}')
  if ways > shape[0]:
    raise ValueError(f'ways={ways} exceeds the {shape[0]} classes of the dataset {shape}; need 1 <= ways <= '
                     f'{shape[0]}')
  if shots > shape[1]:
    raise ValueError(f'shots={shots} exceeds the {shape[1]} examples per class of the dataset {shape}; need '
                     f'1 <= shots <= {shape[1]}')
  return jax.tree_util.Partial(functools.partial(_sequence, ways=ways, shots=shots), jnp.asarray(images))


def _sequence(images: jax.Array, key: jax.Array, *, ways: int, shots: int) -> SequenceTask:
  """One episode of `label_sequences(images, ways, shots)` for `key`."""
  _check_key(key)
  num_classes, per_class, example_shape = images.shape[0], images.shape[1], images.shape[2:]
  class_key, example_key, order_key = jax.random.split(key, 3)
  classes = _choice(class_key, num_classes, ways)
  rows = jnp.broadcast_to(jnp.arange(per_class, dtype=jnp.int32), (ways, per_class))
  examples = jax.random.permutation(example_key, rows, axis=1, independent=True)[:, :shots]
  x = images[classes[:, None], examples].reshape(ways * shots, *example_shape)
  labels = jnp.repeat(jnp.arange(ways, dtype=jnp.int32), shots)
  order = jax.random.permutation(order_key, ways * shots)
  labels = labels[order]
  return SequenceTask(x[order], labels, shifted_labels(labels, ways))
