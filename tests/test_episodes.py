"""The on-device episode sampler: exact properties on a synthetic dataset whose pixels name class and example."""

import functools

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jmeta.datasets.episodes import episodes
from jmeta.datasets.omniglot import rotate, split_images
from jmeta.tasks import Task, check_meta_batch, check_task

SIDE = 3
# The property sweep below compiles 20 samplers of different shapes: at XLA's lowest optimisation level, which
# compiles them in half the time (13 s, not 29). Safe for integer draws and gathers: every other test here, and
# every training run, compiles the sampler at the default level, and the same-key tests compare those programs.
sweep_jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})


def dataset(classes, per_class):
  """`[classes, per_class, 3, 3, 1]` float32, zero but for pixel (0, 0) = `class * per_class + example + 1`."""
  x = np.zeros((classes, per_class, SIDE, SIDE, 1), np.float32)
  x[:, :, 0, 0, 0] = np.arange(classes * per_class).reshape(classes, per_class) + 1
  return x


_MARKER = np.eye(SIDE)[0][:, None] * np.eye(SIDE)[0]
_TURNS = {int(np.argmax(np.rot90(_MARKER, k))): k for k in range(4)}


def decode(x, per_class):
  """`[n, 3, 3, 1]` -> class `[n]`, example `[n]`, quarter turns `[n]` (read from where the marker pixel went)."""
  x = np.asarray(x).reshape(len(x), -1)
  ids = x.max(1).astype(int) - 1
  return ids // per_class, ids % per_class, np.array([_TURNS[int(i)] for i in x.argmax(1)])


@st.composite
def settings_(draw):
  classes = draw(st.integers(1, 10))
  per_class = draw(st.integers(2, 8))
  rotations = draw(st.booleans())
  ways = draw(st.integers(1, classes * (4 if rotations else 1)))
  shots = draw(st.integers(1, per_class - 1))
  queries = draw(st.integers(1, per_class - shots))
  return classes, per_class, ways, shots, queries, rotations, draw(st.integers(0, 2**31 - 1))


def check_episode(task, per_class, ways, shots, queries, rotations):
  """Asserts the properties of one N-way K-shot episode drawn from `dataset(classes, per_class)`."""
  check_task(task)
  assert task.support.x.shape == (ways * shots, SIDE, SIDE, 1) and task.query.x.shape == (ways * queries, SIDE, SIDE, 1)
  assert task.support.y.dtype == jnp.int32 and task.query.y.dtype == jnp.int32
  np.testing.assert_array_equal(task.support.y, np.repeat(np.arange(ways), shots))
  np.testing.assert_array_equal(task.query.y, np.repeat(np.arange(ways), queries))
  s_cls, s_ex, s_rot = decode(task.support.x, per_class)
  q_cls, q_ex, q_rot = decode(task.query.x, per_class)
  if not rotations:
    assert not s_rot.any() and not q_rot.any()
  labels = np.concatenate([task.support.y, task.query.y])
  sources = zip(np.concatenate([s_cls, q_cls]), np.concatenate([s_rot, q_rot]))
  label_class = {}
  for label, source in zip(labels.tolist(), sources):
    assert label_class.setdefault(label, source) == source, 'one label, two original classes'
  assert len(set(label_class.values())) == ways, 'two labels, one original class'
  for label in range(ways):
    in_support = set(s_ex[task.support.y == label])
    in_query = set(q_ex[task.query.y == label])
    assert len(in_support) == shots and len(in_query) == queries and not in_support & in_query


@settings(max_examples=20, deadline=None)
@given(settings_())
def test_episode_properties_under_jit_and_vmap(setting):
  classes, per_class, ways, shots, queries, rotations, seed = setting
  sample = sweep_jit(jax.vmap(episodes(dataset(classes, per_class), ways, shots, queries, rotations=rotations)))
  keys = jax.random.split(jax.random.key(seed), 4)
  batch = sample(keys)
  for i in range(len(keys)):
    check_episode(jax.tree.map(lambda a: a[i], batch), per_class, ways, shots, queries, rotations)
  jax.tree.map(np.testing.assert_array_equal, sample(keys), batch)


def test_rotations_draw_the_same_classes_as_the_rotated_array():
  images = np.random.RandomState(0).rand(3, 6, 4, 4, 2).astype(np.float32)
  keys = jax.random.split(jax.random.key(0), 16)
  lazy = jax.jit(jax.vmap(episodes(images, 5, 2, 3, rotations=True)))(keys)
  stored = jax.jit(jax.vmap(episodes(rotate(images), 5, 2, 3)))(keys)
  jax.tree.map(np.testing.assert_array_equal, lazy, stored)


def test_vmap_equals_loop_and_jit_equals_eager():
  sampler = episodes(dataset(12, 6), 4, 2, 3)
  keys = jax.random.split(jax.random.key(3), 2)
  batch = jax.jit(jax.vmap(sampler))(keys)
  assert check_meta_batch(batch) == 2
  for i, key in enumerate(keys):
    jax.tree.map(lambda b, t: np.testing.assert_array_equal(b[i], t), batch, sampler(key))


def test_raw_uint32_keys_work_and_a_batch_of_keys_is_refused():
  sampler = episodes(dataset(12, 6), 4, 2, 3)
  raw = sampler(jax.random.PRNGKey(0))
  assert raw.support.x.shape == (8, SIDE, SIDE, 1)
  with pytest.raises(ValueError, match='vmap'):
    sampler(jax.random.split(jax.random.key(0), 4))


def test_different_keys_give_different_episodes():
  sampler = jax.jit(jax.vmap(episodes(dataset(50, 20), 5, 1, 5)))
  batch = sampler(jax.random.split(jax.random.key(0), 32))
  flat = np.asarray(jnp.concatenate([batch.support.x, batch.query.x], 1)).reshape(32, -1)
  assert len({row.tobytes() for row in flat}) == 32


@pytest.mark.parametrize('classes, ways', [(6, 3), (100, 70)])
def test_classes_labels_and_examples_are_uniform(classes, ways):
  """Both ways of drawing classes (a scan for ways <= 64, a permutation above) are uniform."""
  n, per_class = 6000, 5
  batch = jax.jit(jax.vmap(episodes(dataset(classes, per_class), ways, 1, 1)))(jax.random.split(jax.random.key(1), n))
  cls, ex, _ = decode(batch.support.x.reshape(n * ways, SIDE, SIDE, 1), per_class)
  cls, ex = cls.reshape(n, ways), ex.reshape(n, ways)
  assert all(len(set(row)) == ways for row in cls)
  for label in range(ways):
    counts, expected = np.bincount(cls[:, label], minlength=classes), n / classes
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), (label, counts)
  counts, expected = np.bincount(ex.ravel(), minlength=per_class), n * ways / per_class
  assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts


def _count_equations(jaxpr):
  return len(jaxpr.eqns) + sum(_count_equations(sub) for sub in jex.subjaxprs(jaxpr))


@pytest.mark.parametrize('rotations', [False, True])
def test_traced_program_does_not_grow_with_ways_shots_or_queries(rotations):
  images = jnp.zeros((3000, 20, SIDE, SIDE, 1))
  keys = jax.random.split(jax.random.key(0), 4)
  sizes = {_count_equations(jax.make_jaxpr(jax.vmap(episodes(images, w, s, q, rotations=rotations)))(keys).jaxpr)
           for w, s, q in [(5, 1, 15), (20, 5, 10), (50, 1, 1)]}
  assert len(sizes) == 1, sizes


def test_sampler_built_inside_jit_from_an_argument():
  images = jnp.asarray(dataset(10, 6))

  @jax.jit
  def meta_batch(key, images):
    return jax.vmap(episodes(images, 3, 2, 2))(jax.random.split(key, 5))

  batch = meta_batch(jax.random.key(0), images)
  closed = jax.jit(jax.vmap(episodes(images, 3, 2, 2)))(jax.random.split(jax.random.key(0), 5))
  jax.tree.map(np.testing.assert_array_equal, batch, closed)


@pytest.mark.parametrize('args, kwargs, message', [
    ((0, 1, 1), {}, 'ways'),
    ((-2, 1, 1), {}, 'ways'),
    ((11, 1, 1), {}, 'ways <= 10'),
    ((41, 1, 1), {'rotations': True}, 'ways <= 40'),
    ((2, 0, 1), {}, 'shots'),
    ((2, 1, 0), {}, 'queries'),
    ((2, 4, 3), {}, 'shots \\+ queries <= 6'),
    ((2.0, 1, 1), {}, 'ways'),
    ((True, 1, 1), {}, 'ways'),
])
def test_invalid_arguments_raise_at_construction(args, kwargs, message):
  with pytest.raises(ValueError, match=message):
    episodes(dataset(10, 6), *args, **kwargs)


def test_invalid_images_raise_at_construction():
  with pytest.raises(ValueError, match='classes, examples_per_class'):
    episodes(np.zeros(10), 2, 1, 1)
  with pytest.raises(ValueError, match='H == W'):
    episodes(np.zeros((10, 6, 3, 4, 1)), 2, 1, 1, rotations=True)


def test_real_omniglot_episodes_hold_one_character_per_label(omniglot_data):
  train = split_images(omniglot_data, 'train')
  character = {hash(image.tobytes()): c for c, row in enumerate(train) for image in row}
  meta_batch = jax.jit(lambda keys, images: jax.vmap(episodes(images, 5, 1, 15))(keys))
  batch = meta_batch(jax.random.split(jax.random.key(0), 32), train)
  assert isinstance(batch, Task) and check_meta_batch(batch) == 32
  assert batch.support.x.shape == (32, 5, 28, 28, 1) and batch.query.x.shape == (32, 75, 28, 28, 1)
  support, query = ([[character[hash(x.tobytes())] for x in task] for task in np.asarray(xs)]
                    for xs in (batch.support.x, batch.query.x))
  assert all(len(set(row)) == 5 for row in support)
  np.testing.assert_array_equal(query, np.take_along_axis(np.array(support), np.asarray(batch.query.y), 1))
