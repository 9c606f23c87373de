"""Label-offset sequences: the shifted labels by hand, and exact properties of the sampler on a synthetic dataset."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.datasets import label_sequences
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
  with pytest.raises(ValueError, match=r'labels must be \[steps\]; got shape \(2, 2\)'):
    shifted_labels(jnp.zeros((2, 2), int), 3)


def test_each_class_appears_shots_times_with_a_bijective_labelling():
  classes, per_class, ways, shots = 7, 6, 4, 5
  sample = label_sequences(dataset(classes, per_class), ways, shots)
  batch = quick_jit(jax.vmap(sample))(jax.random.split(KEY, 50))
  assert batch.inputs.shape == (50, ways * shots, 2) and batch.labels.dtype == jnp.int32
  orders = set()
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
    np.testing.assert_array_equal(task.previous, shifted_labels(task.labels, ways))
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
  with pytest.raises(ValueError, match=r'expected inputs \[steps, \*input_shape\] and labels \[steps\]; got inputs '
                     r'\[4, 2\], labels \[3\]'):
    check_sequence_task(good._replace(labels=jnp.zeros(3, jnp.int32)))
  with pytest.raises(ValueError, match='labels must be integer classes; got dtype float32'):
    check_sequence_task(good._replace(labels=jnp.zeros(4)))
  with pytest.raises(ValueError, match=r'previous must be .* \[4, 5\]; got \[4, 3\]'):
    check_sequence_task(good, 5)
  with pytest.raises(ValueError, match='must be a jmeta.SequenceTask'):
    check_sequence_task(jmeta.Task(jmeta.Split(1, 2), jmeta.Split(1, 2)))
