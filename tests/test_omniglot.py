"""The Omniglot loader, on the real files (see the `omniglot_dir` fixture in conftest.py)."""

import hashlib
import io
import os
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jmeta.datasets import omniglot
from jmeta.tasks import check_meta_batch


def test_counts_shapes_and_values(omniglot_data):
  d = omniglot_data
  assert d.images.shape == (1623, 20, 28, 28) and d.images.dtype == np.float32
  assert d.images.min() >= 0.0 and d.images.max() <= 1.0
  assert d.images.mean() < 0.2, 'ink must be the high value and the background 0'
  assert np.abs(d.images[..., 0, :]).mean() < 0.02 and np.all(d.images.max(axis=(2, 3)) > 0.5)
  assert len(set(d.alphabets.tolist())) == 50
  assert len(set(d.alphabets[d.background].tolist())) == 30 and len(set(d.alphabets[~d.background].tolist())) == 20
  assert d.background.sum() == 964 and not d.background[964:].any()
  assert sorted(d.ids.tolist()) == list(range(1, 1624))
  assert len({(a, c) for a, c in zip(d.alphabets, d.characters)}) == 1623


def test_images_are_the_drawings_named_by_the_metadata(omniglot_dir, omniglot_data):
  """Ink mass survives the 105 -> 28 resize, for drawings found in the zip through the metadata."""
  d = omniglot_data
  for c in (0, 500, 963, 964, 1622):
    top = 'images_background' if d.background[c] else 'images_evaluation'
    with zipfile.ZipFile(omniglot_dir / f'{top}.zip') as zf:
      for drawing in (0, 19):
        name = f'{top}/{d.alphabets[c]}/{d.characters[c]}/{d.ids[c]:04d}_{drawing + 1:02d}.png'
        ink = 1.0 - np.asarray(Image.open(io.BytesIO(zf.read(name))).convert('L'), np.float32) / 255
        assert ink.shape == (105, 105)
        np.testing.assert_allclose(d.images[c, drawing].sum() * (105 / 28) ** 2, ink.sum(), rtol=0.1)
        small = ink.reshape(35, 3, 35, 3).mean((1, 3))
        big = np.kron(d.images[c, drawing], np.ones((5, 5)))[:140:4, :140:4]
        assert np.corrcoef(small.ravel(), big.ravel())[0, 1] > 0.5


def test_second_load_reads_the_cache(omniglot_data, monkeypatch):
  cached = list(os.scandir(os.environ['JMETA_CACHE_DIR']))
  assert [e.name.endswith('.npz') and 'v1' in e.name for e in cached] == [True]

  def fail(*args, **kwargs):
    raise AssertionError('the zips were decoded again')

  monkeypatch.setattr(omniglot, '_read_characters', fail)
  again = omniglot.load()
  for field in omniglot.Omniglot._fields:
    np.testing.assert_array_equal(getattr(again, field), getattr(omniglot_data, field))


def test_directories_come_from_arguments_then_environment_then_user_cache(tmp_path, monkeypatch):
  monkeypatch.setenv('JMETA_DATA_DIR', str(tmp_path / 'data'))
  monkeypatch.setenv('JMETA_CACHE_DIR', str(tmp_path / 'cache'))
  assert omniglot.data_dir() == tmp_path / 'data' and omniglot.cache_dir() == tmp_path / 'cache'
  assert omniglot.data_dir(tmp_path / 'x') == tmp_path / 'x' and omniglot.cache_dir(tmp_path / 'y') == tmp_path / 'y'
  monkeypatch.delenv('JMETA_DATA_DIR')
  monkeypatch.delenv('JMETA_CACHE_DIR')
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert omniglot.data_dir() == tmp_path / 'xdg' / 'jmeta' / 'omniglot'
  assert omniglot.cache_dir() == tmp_path / 'xdg' / 'jmeta'


@pytest.mark.parametrize('protocol, sizes', [('vinyals', (1100, 100, 423)), ('lake', (964, 0, 659))])
def test_splits_are_disjoint_and_cover_all_characters(protocol, sizes):
  parts = omniglot.splits(protocol)
  assert tuple(len(parts[p]) for p in ('train', 'val', 'test')) == sizes
  everything = np.concatenate(list(parts.values()))
  assert len(set(everything.tolist())) == len(everything) == 1623
  again = omniglot.splits(protocol)
  assert all(np.array_equal(parts[p], again[p]) for p in parts)


def test_split_options():
  vinyals = omniglot.splits('vinyals', num_val=0)
  assert len(vinyals['train']) == 1200 and len(vinyals['val']) == 0
  np.testing.assert_array_equal(vinyals['test'], omniglot.splits('vinyals')['test'])
  assert not np.array_equal(vinyals['test'], omniglot.splits('vinyals', seed=1)['test'])
  lake = omniglot.splits('lake', num_val=64)
  np.testing.assert_array_equal(np.sort(np.concatenate([lake['train'], lake['val']])), np.arange(964))
  np.testing.assert_array_equal(lake['test'], np.arange(964, 1623))
  with pytest.raises(ValueError, match='protocol'):
    omniglot.splits('random')
  with pytest.raises(ValueError, match='num_val'):
    omniglot.splits('vinyals', num_val=1200)


def test_split_images_and_rotations(omniglot_data):
  train = omniglot.split_images(omniglot_data, 'train')
  assert train.shape == (1100, 20, 28, 28, 1) and train.dtype == np.float32
  np.testing.assert_array_equal(train[..., 0], omniglot_data.images[omniglot.splits()['train']])
  rotated = omniglot.split_images(omniglot_data, 'train', rotations=True)
  assert rotated.shape == (4400, 20, 28, 28, 1)
  for k in range(4):
    np.testing.assert_array_equal(rotated[k * 1100:(k + 1) * 1100], np.rot90(train, k, axes=(2, 3)))
  assert not np.array_equal(rotated[1100:2200], train)
  assert omniglot.split_images(omniglot_data, 'test', 'lake').shape == (659, 20, 28, 28, 1)
  with pytest.raises(ValueError, match='part'):
    omniglot.split_images(omniglot_data, 'training')


def _fake_zip(path, top, *, drop_drawing=False, png=b''):
  """A zip with Omniglot's layout and counts (30 alphabets, 964 characters) but the same bytes in every PNG."""
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as zf:
    for c in range(964):
      for d in range(20 - (drop_drawing and c == 500)):
        zf.writestr(f'{top}/Alphabet{c % 30:02d}/character{c // 30 + 1:02d}/{c + 1:04d}_{d + 1:02d}.png', png)


@pytest.fixture
def bad_root(tmp_path, omniglot_dir):
  """A data directory with the real evaluation zip and no background zip."""
  (tmp_path / 'images_evaluation.zip').symlink_to(omniglot_dir / 'images_evaluation.zip')
  return tmp_path


def _assert_names_the_directory(error, root):
  assert str(root) in str(error.value) and 'JMETA_DATA_DIR' in str(error.value)


def test_missing_zip_is_a_file_not_found_error_naming_the_directory(bad_root):
  with pytest.raises(omniglot.OmniglotNotFoundError, match='images_background.zip') as error:
    omniglot.load(bad_root)
  assert isinstance(error.value, FileNotFoundError) and isinstance(error.value, ValueError)
  _assert_names_the_directory(error, bad_root)


def test_corrupt_zip_raises(bad_root):
  (bad_root / 'images_background.zip').write_bytes(b'PK\x03\x04 this is not a zip file' * 100)
  with pytest.raises(omniglot.OmniglotError, match='not a readable zip') as error:
    omniglot.load(bad_root)
  _assert_names_the_directory(error, bad_root)


def test_wrong_counts_raise(bad_root):
  with zipfile.ZipFile(bad_root / 'images_background.zip', 'w') as zf:
    zf.writestr('images_background/Latin/character01/0683_01.png', b'')
  with pytest.raises(omniglot.OmniglotError, match='1 alphabets and 1 characters.*expected 30 and 964') as error:
    omniglot.load(bad_root)
  _assert_names_the_directory(error, bad_root)


def test_missing_drawing_raises(bad_root):
  _fake_zip(bad_root / 'images_background.zip', 'images_background', drop_drawing=True)
  with pytest.raises(omniglot.OmniglotError, match='character17 has drawings') as error:
    omniglot.load(bad_root)
  _assert_names_the_directory(error, bad_root)


def test_wrong_image_size_raises(bad_root):
  buffer = io.BytesIO()
  Image.new('1', (50, 50), 1).save(buffer, 'PNG')
  _fake_zip(bad_root / 'images_background.zip', 'images_background', png=buffer.getvalue())
  with pytest.raises(omniglot.OmniglotError, match='image is 50x50') as error:
    omniglot.load(bad_root)
  _assert_names_the_directory(error, bad_root)


def _md5(path):
  return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_checks_the_md5_and_discards_a_mismatch(tmp_path, omniglot_dir, monkeypatch):
  source = omniglot_dir / 'images_background.zip'
  monkeypatch.setitem(omniglot.RESOURCES, 'images_background.zip',
                      (source.as_uri(), omniglot.RESOURCES['images_background.zip'][1]))
  with pytest.raises(omniglot.OmniglotError, match='68d2efa1b9178cc56df9314c21c6e718') as error:
    omniglot.download(tmp_path, ('images_background.zip',))
  assert str(tmp_path) in str(error.value) and list(tmp_path.iterdir()) == []


def test_download_failure_says_where_the_file_goes(tmp_path, monkeypatch):
  monkeypatch.setitem(omniglot.RESOURCES, 'all_runs.zip', ((tmp_path / 'nowhere.zip').as_uri(), '0' * 32))
  with pytest.raises(omniglot.OmniglotError, match='could not download') as error:
    omniglot.load_runs(tmp_path / 'data', download=True)
  _assert_names_the_directory(error, tmp_path / 'data')
  assert not any((tmp_path / 'data').iterdir())


def test_download_then_load(tmp_path, omniglot_dir, omniglot_data, monkeypatch):
  """The original md5 of all_runs.zip holds (that file is byte-identical); the rebuilt zips get their own md5."""
  for name in omniglot.RESOURCES:
    md5 = omniglot.RESOURCES[name][1] if name == 'all_runs.zip' else _md5(omniglot_dir / name)
    monkeypatch.setitem(omniglot.RESOURCES, name, ((omniglot_dir / name).as_uri(), md5))
  assert omniglot.download(tmp_path) == tmp_path
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(omniglot.RESOURCES)
  monkeypatch.setattr(omniglot, '_read_characters', None)  # same bytes, same cache file: nothing is decoded
  np.testing.assert_array_equal(omniglot.load(tmp_path, download=True).images, omniglot_data.images)


@pytest.fixture(scope='module')
def runs(omniglot_dir):
  return omniglot.load_runs()


def test_runs_shapes_and_labels(runs):
  assert runs.train.shape == runs.test.shape == (20, 20, 28, 28, 1)
  assert runs.train.dtype == runs.test.dtype == np.float32 and runs.labels.dtype == np.int32
  assert runs.labels.shape == (20, 20)
  for row in runs.labels:
    assert sorted(row.tolist()) == list(range(20))
  assert 0 <= runs.train.min() and runs.train.max() <= 1 and runs.train.mean() < 0.2


def test_run_images_are_evaluation_drawings_of_the_labelled_character(runs, omniglot_data):
  evaluation = np.flatnonzero(~omniglot_data.background)
  where = {omniglot_data.images[c, d].tobytes(): (c, d) for c in evaluation for d in range(20)}
  train = [[where[x[..., 0].tobytes()] for x in run] for run in runs.train]
  test = [[where[x[..., 0].tobytes()] for x in run] for run in runs.test]
  for r in range(20):
    assert len({c for c, _ in train[r]}) == 20
    assert len({omniglot_data.alphabets[c] for c, _ in train[r]}) == 1, 'a run is within one alphabet'
    for item, label in enumerate(runs.labels[r]):
      assert test[r][item][0] == train[r][label][0] and test[r][item][1] != train[r][label][1]
      assert not np.array_equal(runs.test[r, item], runs.train[r, label])


def test_run_tasks_score_a_pixel_nearest_neighbour_above_chance(runs):
  tasks = omniglot.run_tasks(runs)
  assert check_meta_batch(tasks) == 20
  np.testing.assert_array_equal(tasks.support.y, np.tile(np.arange(20), (20, 1)))
  distance = jnp.sum((tasks.query.x[:, :, None] - tasks.support.x[:, None]) ** 2, axis=(3, 4, 5))
  accuracy = float(jnp.mean(tasks.support.y[0][jnp.argmin(distance, axis=2)] == tasks.query.y))
  assert 0.15 < accuracy < 0.8, accuracy
