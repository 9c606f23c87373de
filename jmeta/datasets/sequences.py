"""Label-offset episodes for memory-augmented learners, drawn on the device as pure functions of a PRNG key."""

from __future__ import annotations

import functools
import math
import numbers
from typing import Callable

import jax
import jax.numpy as jnp

from jmeta.checks import check_positive_int
from jmeta.datasets.episodes import _check_key, _choice
from jmeta.sequences import SequenceTask, shifted_labels


LABELS = ('one-hot', 'string')
STRING_CHARS, STRING_LETTERS = 5, 5
"""Santoro et al.'s string labels: five characters, each one of five letters ('a' to 'e')."""


def label_width(ways: int, labels: str = 'one-hot') -> int:
  """The width of `previous` and of a learner's logits: `ways` for one-hot labels, 25 for string labels."""
  if labels not in LABELS:
    raise ValueError(f"labels must be 'one-hot' or 'string'; got {labels!r}")
  return ways if labels == 'one-hot' else STRING_CHARS * STRING_LETTERS


def label_sequences(images: jax.Array, ways: int, shots: int, *, rotations: bool = False, max_angle: float = 0.0,
                    max_shift: float = 0.0, labels: str = 'one-hot') -> Callable[[jax.Array], SequenceTask]:
  """A sampler of label-offset sequences: `sample(key) -> SequenceTask`, pure, for `jax.jit` and `jax.vmap`.

  Each episode draws `ways` distinct classes and `shots` distinct examples of each, and shows the `ways * shots`
  examples in a uniformly random time order. Labels are a fresh random assignment per episode: the classes are
  drawn in a uniformly random order (`_choice`) and class `i` of the draw gets label `i`, which is a uniformly
  random bijection from the drawn classes onto `0..ways-1`, so no label means a fixed class across episodes. The
  task's `previous` holds the one-hot label of the step before, zeros at step 0. This is the protocol of Santoro et
  al. (2016, arXiv:1605.06065), who use Omniglot with `ways=5, shots=10` (50 steps) and one-hot labels.

  With `labels='string'`, each episode gives its classes distinct random strings of 5 characters from 5 letters
  instead (Santoro et al.'s labels for 15 classes and more, which one-hot codes would make wide): the task's labels
  are `[steps, 5]` letter indices and `previous` holds one one-hot of 5 per character, `[steps, 25]`.

  Augmentation as Santoro et al. describe it ("randomly translating and rotating character images... new classes
  through 90, 180 and 270 degree rotations"): `rotations` draws from four times the classes, as `episodes` does, and
  each drawn class is turned by an angle uniform in `[-max_angle, max_angle]` degrees and shifted by an offset
  uniform in `[-max_shift, max_shift]` pixels on each axis (bilinear, zero outside the image). The jitter is drawn
  once per class per episode, so a class's examples in one episode share it, as in the public reimplementation of
  Santoro et al. (github.com/tristandeleu/ntm-one-shot, 30 degrees and 10 of 105 pixels).

  Like `jmeta.datasets.episodes`, the sampler is a `jax.tree_util.Partial` holding `images` as a leaf, so a jitted
  function taking it as an argument receives the dataset as a device buffer.

  Args:
    images: `[classes, examples_per_class, *example_shape]`, e.g. `[classes, 20, 20, 20, 1]` for Omniglot at
      Santoro et al.'s 20x20; `[classes, examples, H, W, channels]` with rotations or jitter.
    ways: classes per episode, `1 <= ways <= classes` (`4 * classes` with rotations).
    shots: examples per class in the sequence, `1 <= shots <= examples_per_class`.
    rotations: add each class turned by 90, 180 and 270 degrees as three new classes (square images).
    max_angle: largest random rotation of a class in degrees, `>= 0` (0: none).
    max_shift: largest random translation of a class in pixels per axis, `>= 0` (0: none).
    labels: 'one-hot' or 'string'.

  Returns:
    `sample(key) -> SequenceTask` with inputs `[ways * shots, *example_shape]`, labels `[ways * shots]` int32 in
    `0..ways-1`, each `shots` times, and previous `[ways * shots, ways]` float32.

  Raises:
    ValueError: at construction, for non-positive counts, `images` of rank below 2, `ways` above the number of
      classes, `shots` above the examples per class, a negative jitter, or rotations or jitter on images that are
      not `[classes, examples, H, W, channels]` (square for rotations).
  """
  ways, shots = check_positive_int(ways, 'ways'), check_positive_int(shots, 'shots')
  label_width(ways, labels)
  if labels == 'string' and ways > STRING_LETTERS ** STRING_CHARS:
    raise ValueError(f'ways={ways} exceeds the {STRING_LETTERS ** STRING_CHARS} distinct string labels')
  shape = tuple(jnp.shape(images))
  if len(shape) < 2:
    raise ValueError(f'images must be [classes, examples_per_class, *example_shape]; got shape {shape}')
  for value, name in ((max_angle, 'max_angle'), (max_shift, 'max_shift')):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
      raise ValueError(f'{name} must be a finite number >= 0; got {value!r}')
  jitter = max_angle > 0 or max_shift > 0
  if (rotations or jitter) and len(shape) != 5:
    raise ValueError(f'rotations and max_angle/max_shift need images [classes, examples, H, W, channels]; got shape '
                     f'{shape}')
  if rotations and shape[2] != shape[3]:
    raise ValueError(f'rotations=True needs square images, H == W; got shape {shape}')
  total = 4 * shape[0] if rotations else shape[0]
  if ways > total:
    raise ValueError(f'ways={ways} exceeds the {total} classes of the dataset {shape}'
                     f'{" with rotations" if rotations else ""}; need 1 <= ways <= {total}')
  if shots > shape[1]:
    raise ValueError(f'shots={shots} exceeds the {shape[1]} examples per class of the dataset {shape}; need '
                     f'1 <= shots <= {shape[1]}')
  sequence = functools.partial(_sequence, ways=ways, shots=shots, rotations=rotations,
                               max_angle=float(max_angle), max_shift=float(max_shift), strings=labels == 'string')
  return jax.tree_util.Partial(sequence, jnp.asarray(images))


def jitter(images: jax.Array, angle: jax.Array, shift: jax.Array) -> jax.Array:
  """`images: [examples, H, W, channels]` rotated by `angle` degrees (counterclockwise) about the centre and moved by
  `shift: [2]` pixels (down, right), bilinear, zero outside; the same shape."""
  height, width = images.shape[1:3]
  theta = jnp.deg2rad(angle)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  i, j = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing='ij')
  # Output pixel (i, j) reads the input where the inverse transform takes it.
  di, dj = i - (height - 1) / 2 - shift[0], j - (width - 1) / 2 - shift[1]
  rows = cos * di + sin * dj + (height - 1) / 2
  cols = -sin * di + cos * dj + (width - 1) / 2

  def one(channel: jax.Array) -> jax.Array:
    return jax.scipy.ndimage.map_coordinates(channel, [rows, cols], order=1, mode='constant', cval=0.0)

  moved = jax.vmap(jax.vmap(one, in_axes=-1, out_axes=-1))(images)
  return moved.astype(images.dtype)


def _sequence(images: jax.Array, key: jax.Array, *, ways: int, shots: int, rotations: bool, max_angle: float,
              max_shift: float, strings: bool) -> SequenceTask:
  """One episode of `label_sequences(images, ways, shots, ...)` for `key`."""
  _check_key(key)
  num_classes, per_class, example_shape = images.shape[0], images.shape[1], images.shape[2:]
  total = 4 * num_classes if rotations else num_classes
  class_key, example_key, order_key, angle_key, shift_key = jax.random.split(key, 5)
  classes = _choice(class_key, total, ways)
  rows = jnp.broadcast_to(jnp.arange(per_class, dtype=jnp.int32), (ways, per_class))
  examples = jax.random.permutation(example_key, rows, axis=1, independent=True)[:, :shots]
  x = images[(classes % num_classes)[:, None], examples]
  if rotations:
    turned = jnp.stack([jnp.rot90(x, k, axes=(2, 3)) for k in range(4)])
    x = turned[classes // num_classes, jnp.arange(ways)]
  if max_angle > 0 or max_shift > 0:
    angles = jax.random.uniform(angle_key, (ways,), minval=-max_angle, maxval=max_angle)
    shifts = jax.random.uniform(shift_key, (ways, 2), minval=-max_shift, maxval=max_shift)
    x = jax.vmap(jitter)(x, angles, shifts)
  x = x.reshape(ways * shots, *example_shape)
  labels = jnp.repeat(jnp.arange(ways, dtype=jnp.int32), shots)
  order = jax.random.permutation(order_key, ways * shots)
  labels = labels[order]
  if not strings:
    return SequenceTask(x[order], labels, shifted_labels(labels, ways))
  codes = _choice(jax.random.fold_in(key, 1), STRING_LETTERS ** STRING_CHARS, ways)
  powers = STRING_LETTERS ** jnp.arange(STRING_CHARS - 1, -1, -1, dtype=jnp.int32)
  letters = (codes[:, None] // powers) % STRING_LETTERS  # [ways, chars], distinct rows
  strings = letters[labels]
  return SequenceTask(x[order], strings, shifted_labels(strings, STRING_CHARS * STRING_LETTERS))
