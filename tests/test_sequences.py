"""Label-offset sequences: the shifted labels by hand, and exact properties of the sampler on a synthetic dataset."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.datasets import label_sequences
from jmeta.datasets.sequences import jitter
from jmeta.sequences import SequenceTask, check_sequence_task, shifted_labels

quick_jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})
KEY = jax.random.key(0)


def dataset(classes, per_class):
  """`[classes, per_class, 2]` float32 whose pixels are the class and the example index."""
  c, e = np.meshgrid(np.arange(classes), np.arange(per_class), indexing='ij')
  return np.stack([c, e], -1).astype(np.float32)


def test_shifted_labels_by_hand():
  got = shifted_labels(jnp.array([2, 0, 1, 1]), 3)
  want = np.array([[0, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]], np.float32)
  np.testing.assert_array_equal(got, want)
  assert got.dtype == jnp.float32
  with pytest.raises(ValueError, match=r'labels must be \[steps\] or \[steps, chars\]; got shape \(2, 2, 1\)'):
    shifted_labels(jnp.zeros((2, 2, 1), int), 3)
  with pytest.raises(ValueError, match='3 label inputs do not split into 2 characters'):
    shifted_labels(jnp.zeros((2, 2), int), 3)


def test_each_class_appears_shots_times_with_a_bijective_labelling():
  classes, per_class, ways, shots = 7, 6, 4, 5
  sample = label_sequences(dataset(classes, per_class), ways, shots)
  batch = quick_jit(jax.vmap(sample))(jax.random.split(KEY, 50))
  assert batch.inputs.shape == (50, ways * shots, 2) and batch.labels.dtype == jnp.int32
  orders = set()
  shifted = jax.jit(shifted_labels, static_argnums=1)
  for i in range(50):
    task = jax.tree.map(lambda a: np.asarray(a[i]), batch)
    assert check_sequence_task(SequenceTask(*task), ways) == ways * shots
    np.testing.assert_array_equal(np.bincount(task.labels, minlength=ways), [shots] * ways)
    source = task.inputs[:, 0].astype(int)
    label_class = {int(lab): set(source[task.labels == lab].tolist()) for lab in range(ways)}
    assert all(len(c) == 1 for c in label_class.values()), 'one label, two classes'
    assert len({c.pop() for c in label_class.values()}) == ways, 'two labels, one class'
    pairs = set(map(tuple, task.inputs.astype(int).tolist()))
    assert len(pairs) == ways * shots, 'an example shown twice'
    np.testing.assert_array_equal(task.previous, shifted(task.labels, ways))
    orders.add(tuple(task.labels.tolist()))
  assert len(orders) > 40, 'time order is not shuffled'
  # Across episodes each class gets each label: the labelling is random per episode.
  first = np.asarray(batch.inputs)[:, :, 0].astype(int)
  seen = {(c, lab) for f, ls in zip(first, np.asarray(batch.labels)) for c, lab in zip(f, ls)}
  assert len(seen) == classes * ways


def test_same_key_same_task_vmap_equals_loop_and_jit_equals_eager():
  sample = label_sequences(dataset(5, 4), 3, 2)
  keys = jax.random.split(KEY, 3)
  batch = quick_jit(jax.vmap(sample))(keys)
  for i, key in enumerate(keys):
    one = sample(key)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[i], b), batch, one)
    jax.tree.map(np.testing.assert_array_equal, one, sample(key))
  with pytest.raises(ValueError, match='sampler takes one PRNG key'):
    sample(keys)


@pytest.mark.parametrize('args, message', [
    ((dataset(3, 4), 4, 2), r'ways=4 exceeds the 3 classes of the dataset \(3, 4, 2\); need 1 <= ways <= 3'),
    ((dataset(3, 4), 2, 5), r'shots=5 exceeds the 4 examples per class .*need 1 <= shots <= 4'),
    ((np.zeros(5), 1, 1), r'images must be \[classes, examples_per_class, \*example_shape\]; got shape \(5,\)'),
    ((dataset(3, 4), 0, 1), r'ways must be an integer >= 1; got 0'),
])
def test_invalid_arguments_raise_at_construction(args, message):
  with pytest.raises(ValueError, match=message):
    label_sequences(*args)


def test_check_sequence_task_errors():
  good = SequenceTask(jnp.zeros((4, 2)), jnp.zeros(4, jnp.int32), jnp.zeros((4, 3)))
  assert check_sequence_task(good, 3) == 4
  with pytest.raises(ValueError, match=r'expected inputs \[steps, \*input_shape\] and labels \[steps\] \(or \[steps, '
                     r'chars\]\); got inputs \[4, 2\], labels \[3\]'):
    check_sequence_task(good._replace(labels=jnp.zeros(3, jnp.int32)))
  with pytest.raises(ValueError, match='labels must be integer classes; got dtype float32'):
    check_sequence_task(good._replace(labels=jnp.zeros(4)))
  with pytest.raises(ValueError, match=r'previous must be .* \[4, 5\]; got \[4, 3\]'):
    check_sequence_task(good, 5)
  with pytest.raises(ValueError, match='must be a jmeta.SequenceTask'):
    check_sequence_task(jmeta.Task(jmeta.Split(1, 2), jmeta.Split(1, 2)))


def test_jitter_by_hand_quarter_turn_and_whole_pixel_shifts():
  x = np.asarray(jax.jit(lambda k: jax.random.uniform(k, (2, 5, 5, 3)))(KEY))
  jitter_ = jax.jit(jitter)  # one program for every angle and shift
  np.testing.assert_allclose(jitter_(x, 90.0, np.zeros(2)), np.rot90(x, 1, axes=(1, 2)), atol=1e-5)
  np.testing.assert_allclose(jitter_(x, 0.0, np.zeros(2)), x, atol=1e-6)
  down = np.asarray(jitter_(x, 0.0, np.array([1.0, 0.0])))
  np.testing.assert_allclose(down[:, 1:], x[:, :-1], atol=1e-6)
  np.testing.assert_array_equal(down[:, 0], 0.0)  # zero where the shift uncovers the image
  left = np.asarray(jitter_(x, 0.0, np.array([0.0, -2.0])))
  np.testing.assert_allclose(left[:, :, :-2], x[:, :, 2:], atol=1e-6)
  half = np.asarray(jitter_(x, 0.0, np.array([0.5, 0.0])))  # bilinear: the mean of two rows
  np.testing.assert_allclose(half[:, 1:], (x[:, 1:] + x[:, :-1]) / 2, atol=1e-6)


def test_rotated_classes_and_jitter_keep_each_class_under_one_label():
  """Images whose pixels name the class (all pixels equal) and whose corner marks the orientation: with rotations
  the 4 orientations are distinct classes, and a class's jitter is shared by its examples in an episode."""
  classes, per_class = 3, 4
  images = np.zeros((classes, per_class, 6, 6, 1), np.float32)
  images[..., :] = (1 + np.arange(classes))[:, None, None, None, None]
  images[:, :, 0, 0] = 10.0  # top-left corner: turned with the image
  sample = label_sequences(images, 6, 2, rotations=True)
  batch = quick_jit(jax.vmap(sample))(jax.random.split(KEY, 20))
  corner = {(int(round(float(t[1:-1, 1:-1].mean()))), tuple(np.argwhere(np.asarray(t[..., 0]) == 10.0)[0]))
            for t in np.asarray(batch.inputs).reshape(-1, 6, 6, 1)}
  assert len(corner) == 4 * classes  # every class in every orientation
  jittered = label_sequences(images, 2, 4, max_angle=30.0, max_shift=1.5)
  tasks = quick_jit(jax.vmap(jittered))(jax.random.split(KEY, 10))
  for inputs, labels in zip(np.asarray(tasks.inputs), np.asarray(tasks.labels)):
    for label in range(2):
      same = inputs[labels == label]
      np.testing.assert_allclose(same, np.broadcast_to(same[:1], same.shape), atol=1e-5)  # one jitter per class
  assert not np.allclose(tasks.inputs[0, 0], images[0, 0]) and not np.allclose(tasks.inputs[0, 0], images[1, 0])


@pytest.mark.parametrize('kwargs, message', [
    (dict(max_angle=-1.0), 'max_angle must be a finite number >= 0; got -1.0'),
    (dict(max_shift=float('inf')), 'max_shift must be a finite number >= 0; got inf'),
    (dict(rotations=True), r'need images \[classes, examples, H, W, channels\]; got shape \(3, 4, 2\)'),
])
def test_invalid_augmentation_raises_at_construction(kwargs, message):
  with pytest.raises(ValueError, match=message):
    label_sequences(dataset(3, 4), 2, 2, **kwargs)
  with pytest.raises(ValueError, match=r'rotations=True needs square images'):
    label_sequences(np.zeros((3, 4, 5, 6, 1)), 2, 2, rotations=True)


def test_string_labels_by_hand():
  """Santoro et al.'s five-character labels: one one-hot per character in `previous`, a step right only when every
  character is, the cross-entropy summed over the characters."""
  labels = jnp.array([[0, 1], [2, 2], [0, 1]])  # 2 characters of 3 letters
  logits = jnp.array([[5., 0, 0, 0, 5, 0], [0, 0, 5, 5, 0, 0], [5, 0, 0, 0, 5, 0]])  # step 1: 2nd character wrong
  seq = jmeta.sequences
  previous, instances, hits, by_instance, cross_entropy = jax.jit(lambda logits, labels: (
      seq.shifted_labels(labels, 6), seq.instance_numbers(labels), seq.sequence_hits(logits, labels),
      seq.accuracy_by_instance(logits, labels, (1, 2)), seq.sequence_cross_entropy(logits, labels)))(logits, labels)
  np.testing.assert_array_equal(previous, [[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 1, 0], [0, 0, 1, 0, 0, 1]])
  np.testing.assert_array_equal(instances, [1, 1, 2])
  np.testing.assert_array_equal(hits, [True, False, True])
  np.testing.assert_allclose(by_instance, [0.5, 1.0])
  log_softmax = np.log(np.exp(5) + 2) - np.array([5, 5]), np.log(np.exp(5) + 2) - np.array([5, 0])
  want = (2 * (log_softmax[0].sum()) + log_softmax[1].sum()) / 3
  np.testing.assert_allclose(cross_entropy, want, rtol=1e-6)


def test_string_label_sequences_give_each_class_one_distinct_string():
  sample = label_sequences(dataset(7, 6), 4, 3, labels='string')
  batch = quick_jit(jax.vmap(sample))(jax.random.split(KEY, 20))
  assert batch.labels.shape == (20, 12, 5) and batch.previous.shape == (20, 12, 25)
  shifted = jax.jit(jmeta.shifted_labels, static_argnums=1)
  for inputs, labels, previous in zip(*map(np.asarray, batch)):
    strings = {int(c): {tuple(s) for s in labels[inputs[:, 0] == c]} for c in np.unique(inputs[:, 0])}
    assert all(len(s) == 1 for s in strings.values()) and len({s.pop() for s in strings.values()}) == 4
    assert labels.min() >= 0 and labels.max() < 5
    np.testing.assert_array_equal(previous, shifted(labels, 25))
  with pytest.raises(ValueError, match="labels must be 'one-hot' or 'string'; got 'binary'"):
    label_sequences(dataset(7, 6), 4, 3, labels='binary')
