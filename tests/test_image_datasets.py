"""mini-ImageNet, tiered-ImageNet, CIFAR-FS and FC100 read from tiny synthetic files of their formats; ResNet-12."""

import io
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jmeta.datasets import image_folders as imf


def _images(rng, n, size=16):
  return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _png(image):
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='PNG')
  return buf.getvalue()


def _write_mini_pickles(root, rng, classes=3, per_class=4, size=16, val_name='validation'):
  """learn2learn's mini-imagenet-cache-{split}.pkl; returns {split: {wnid: [per_class, size, size, 3]}}."""
  root.mkdir(parents=True, exist_ok=True)
  truth = {}
  for split, stem in (('train', 'train'), ('val', val_name), ('test', 'test')):
    data = _images(rng, classes * per_class, size)
    order = rng.permutation(len(data))  # a class's images need not be contiguous in image_data
    wnids = [f'n{split}{c:02d}' for c in range(classes)][::-1]
    class_dict = {w: order[c * per_class:(c + 1) * per_class].tolist() for c, w in enumerate(wnids)}
    with open(root / f'mini-imagenet-cache-{stem}.pkl', 'wb') as f:
      pickle.dump({'image_data': data, 'class_dict': class_dict}, f, protocol=2)
    truth[split] = {w: data[i] for w, i in class_dict.items()}
  return truth


def _as_classes(split: imf.ImageSplit):
  return {str(n): split.images[a:b] for n, a, b in zip(split.names, split.offsets[:-1], split.offsets[1:])}


def _assert_same(split, truth):
  got = _as_classes(split)
  assert sorted(got) == sorted(truth) == list(split.names)
  for name in truth:
    np.testing.assert_array_equal(got[name], truth[name])


@pytest.mark.parametrize('val_name', ['validation', 'val'])
def test_mini_imagenet_pickles_round_trip_and_cache(tmp_path, val_name):
  truth = _write_mini_pickles(tmp_path / 'data', np.random.default_rng(0), val_name=val_name)
  cache = tmp_path / 'cache'
  for split in imf.SPLITS:
    _assert_same(imf.load('mini-imagenet', split, tmp_path / 'data', strict=False, cache_dir=cache), truth[split])
  assert len(list(cache.glob('mini-imagenet_*.npz'))) == 3
  (tmp_path / 'data' / 'mini-imagenet-cache-test.pkl').write_bytes(b'not read: the cache is keyed by size and time')
  with pytest.raises(imf.ImageDatasetError, match='not a readable pickle'):
    imf.load('mini-imagenet', 'test', tmp_path / 'data', strict=False, cache_dir=cache)


def test_strict_mode_names_expected_and_found(tmp_path):
  _write_mini_pickles(tmp_path, np.random.default_rng(1))
  with pytest.raises(imf.ImageDatasetError) as e:
    imf.load('mini-imagenet', 'train', tmp_path, cache_dir=tmp_path / 'c')
  message = str(e.value)
  for part in ('3 classes (expected 64)', '4..4 images a class (expected 600)', '(16, 16, 3) (expected (84, 84, 3))',
               '--no-strict'):
    assert part in message, message


def test_mini_imagenet_csv_split_over_jpegs(tmp_path):
  rng = np.random.default_rng(2)
  (tmp_path / 'images').mkdir()
  expected = {}
  for split in imf.SPLITS:
    rows = ['filename,label']
    for c in range(2):
      label = f'n{split}{c}'
      for i in range(2):
        name = f'{label}{i:08d}.jpg'
        size = 84 if i == 0 else 40  # the original JPEGs are of any size; they are resized to 84x84
        Image.fromarray(_images(rng, 1, size)[0]).save(tmp_path / 'images' / name)
        rows.append(f'{name},{label}')
        with Image.open(tmp_path / 'images' / name) as im:
          im = im.convert('RGB')
          expected.setdefault(split, {}).setdefault(label, []).append(
              np.asarray(im if im.size == (84, 84) else im.resize((84, 84), Image.Resampling.LANCZOS)))
    (tmp_path / f'{split}.csv').write_text('\n'.join(rows) + '\n')
  for split in imf.SPLITS:
    got = imf.load('mini-imagenet', split, tmp_path, strict=False, cache_dir=tmp_path / 'c')
    _assert_same(got, {k: np.stack(v) for k, v in expected[split].items()})
  (tmp_path / 'images' / 'ntest000000001.jpg').unlink()
  (tmp_path / 'test.csv').write_text('filename,label\nntest000000001.jpg,ntest0\n')  # a new file: no cache hit
  with pytest.raises(imf.ImageFilesNotFoundError, match='ntest000000001.jpg'):
    imf.load('mini-imagenet', 'test', tmp_path, strict=False, cache_dir=tmp_path / 'c')


def _write_tiered(root, rng, sizes=((3, 5, 4), (2, 3), (2, 2))):
  truth = {}
  for split, counts in zip(imf.SPLITS, sizes):
    labels = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(labels)
    data = _images(rng, len(labels), 12)
    with open(root / f'{split}_images_png.pkl', 'wb') as f:
      pickle.dump([np.frombuffer(_png(x), np.uint8) for x in data], f, protocol=2)
    with open(root / f'{split}_labels.pkl', 'wb') as f:
      pickle.dump({'label_specific': labels, 'label_general': labels // 2}, f, protocol=2)
    truth[split] = {str(c): data[labels == c] for c in range(len(counts))}
  return truth


def test_tiered_imagenet_pngs_and_ragged_episodes(tmp_path):
  truth = _write_tiered(tmp_path, np.random.default_rng(3))
  splits = {s: imf.load('tiered-imagenet', s, tmp_path, strict=False, cache_dir=tmp_path / 'c') for s in imf.SPLITS}
  for s in imf.SPLITS:
    _assert_same(splits[s], truth[s])
  with pytest.raises(imf.ImageDatasetError, match=r'3 classes \(expected 351\).*12 images \(expected 448695\)'):
    imf.load('tiered-imagenet', 'train', tmp_path, cache_dir=tmp_path / 'c')
  train = splits['train']
  owner = {x.tobytes(): int(c) for c, xs in _as_classes(train).items() for x in xs}
  sample = jax.jit(jax.vmap(imf.sampler(train, 2, 1, 1)))
  tasks = sample(jax.random.split(jax.random.PRNGKey(0), 200))
  assert tasks.support.x.shape == (200, 2, 12, 12, 3) and tasks.support.x.dtype == jnp.float32
  pixels = np.rint(np.asarray(jnp.concatenate([tasks.support.x, tasks.query.x], 1)) * 255).astype(np.uint8)
  seen = set()
  for t in range(200):
    cls = [[owner[pixels[t, j].tobytes()] for j in (i, 2 + i)] for i in range(2)]  # support i, query i
    assert cls[0][0] == cls[0][1] and cls[1][0] == cls[1][1] and cls[0][0] != cls[1][0]
    assert not np.array_equal(pixels[t, 0], pixels[t, 2]) and not np.array_equal(pixels[t, 1], pixels[t, 3])
    seen.update(pixels[t, j].tobytes() for j in range(4))
  assert len(seen) == 12  # every image of every class, the 3-image class's too, is drawn somewhere
  with pytest.raises(ValueError, match='smallest class'):
    imf.ragged_episodes(train, 2, 2, 2)


def test_cifar_fs_folders_and_fc100_pickles(tmp_path):
  rng = np.random.default_rng(4)
  base = tmp_path / 'cifar' / 'cifar100'
  truth = {}
  for split, names in (('train', ['apple', 'bear']), ('val', ['cloud']), ('test', ['dolphin', 'fox'])):
    (base / 'splits' / 'bertinetto').mkdir(parents=True, exist_ok=True)
    (base / 'splits' / 'bertinetto' / f'{split}.txt').write_text('\n'.join(names[::-1]) + '\n')
    truth[split] = {}
    for name in names:
      (base / 'data' / name).mkdir(parents=True)
      truth[split][name] = _images(rng, 3, 32)
      for i, x in enumerate(truth[split][name]):
        (base / 'data' / name / f'{i}.png').write_bytes(_png(x))
  for split in imf.SPLITS:
    _assert_same(imf.load('cifar-fs', split, tmp_path / 'cifar', strict=False, cache_dir=tmp_path / 'c'),
                 truth[split])
  with pytest.raises(imf.ImageDatasetError, match=r'2 classes \(expected 64\).*3..3 images a class'):
    imf.load('cifar-fs', 'train', tmp_path / 'cifar', cache_dir=tmp_path / 'c')

  fc = tmp_path / 'fc'
  fc.mkdir()
  for split in imf.SPLITS:
    labels = [7, 2, 7, 2, 9, 9]
    data = _images(rng, 6, 32)
    with open(fc / f'FC100_{split}.pickle', 'wb') as f:
      pickle.dump({'data': data, 'labels': labels}, f, protocol=2)
    got = imf.load('fc100', split, fc, strict=False, cache_dir=tmp_path / 'c')
    _assert_same(got, {str(c): data[np.array(labels) == c] for c in (2, 7, 9)})


@pytest.mark.parametrize('name, split, files', [
    ('mini-imagenet', 'val', ['mini-imagenet-cache-validation.pkl', 'val.csv']),
    ('tiered-imagenet', 'test', ['test_images_png.pkl and test_labels.pkl']),
    ('cifar-fs', 'train', ['splits/bertinetto/train.txt']),
    ('fc100', 'val', ['FC100_val.pickle']),
])
def test_missing_files_name_what_to_put_where(tmp_path, name, split, files):
  with pytest.raises(imf.ImageFilesNotFoundError) as e:
    imf.load(name, split, tmp_path)
  message = str(e.value)
  assert str(tmp_path) in message and 'not downloaded' in message and f'$JMETA_DATA_DIR/{name}' in message
  for f in files:
    assert f in message, message


def test_bad_arguments():
  with pytest.raises(ValueError, match="expected one of mini-imagenet"):
    imf.load('imagenet')
  with pytest.raises(ValueError, match="expected one of train, val, test"):
    imf.load('fc100', 'validation')


def test_resnet12_shapes_and_published_parameter_count():
  from jmeta.models import conv4
  from jmeta.models.resnet12 import resnet12
  model = conv4.functional(resnet12())
  for size in (84, 32):
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((2, size, size, 3)))
    out = jax.eval_shape(model.apply, params, jnp.zeros((2, size, size, 3)))
    assert out.shape == (2, 640)
  # learn2learn's ResNet12 (64, 160, 320, 640), counted layer by layer from its source: per block three bias-free
  # 3x3 convs, a bias-free 1x1 shortcut, four BatchNorms of scale and bias. 12,424,320, the "12.4M" of Lee et al.
  expected, cin = 0, 3
  for c in (64, 160, 320, 640):
    expected += 9 * cin * c + 2 * 9 * c * c + cin * c + 4 * 2 * c
    cin = c
  assert expected == 12_424_320
  assert sum(np.prod(p.shape) for p in jax.tree.leaves(params)) == expected


def test_resnet12_block_against_numpy():
  """One residual block of a narrow ResNet-12 against NumPy convolutions, batch norm and pooling by hand."""
  from jmeta.models import conv4
  from jmeta.models.resnet12 import resnet12
  model = conv4.functional(resnet12(widths=(3,)))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 2))
  rng = np.random.default_rng(3)
  params = jax.tree.map(lambda p: np.asarray(p) + 0.1 * rng.standard_normal(p.shape).astype(np.float32),
                        jax.jit(model.init)(jax.random.PRNGKey(2), x))
  got = np.asarray(jax.jit(model.apply)(params, x))
  p = jax.tree.map(np.asarray, params['block0'])

  def conv(h, k):
    kh = k.shape[0] // 2
    padded = np.pad(h, ((0, 0), (kh, kh), (kh, kh), (0, 0)))
    out = np.zeros(h.shape[:3] + (k.shape[-1],))
    for i in range(k.shape[0]):
      for j in range(k.shape[1]):
        out += padded[:, i:i + h.shape[1], j:j + h.shape[2]] @ k[i, j]
    return out

  def norm(h, q):
    mean, var = h.mean((0, 1, 2)), h.var((0, 1, 2))
    return (h - mean) / np.sqrt(var + 1e-5) * q['scale'] + q['bias']

  leaky = lambda h: np.where(h > 0, h, 0.1 * h)
  h = np.asarray(x, np.float64)
  y = leaky(norm(conv(h, p['conv0']['kernel']), p['norm0']))
  y = leaky(norm(conv(y, p['conv1']['kernel']), p['norm1']))
  y = norm(conv(y, p['conv2']['kernel']), p['norm2'])
  y = leaky(y + norm(conv(h, p['shortcut']['kernel']), p['shortcut_norm']))
  y = y.reshape(2, 3, 2, 3, 2, 3).max((2, 4)).mean((1, 2))
  np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-4)


def test_cli_trains_and_evaluates_on_mini_imagenet(tmp_path, monkeypatch):
  from jmeta import cli
  from jmeta.training import read_metrics
  monkeypatch.setenv('JMETA_CACHE_DIR', str(tmp_path / 'cache'))
  _write_mini_pickles(tmp_path / 'data', np.random.default_rng(5), per_class=3)
  run = ['train', '--algo', 'protonet', '--dataset', 'mini-imagenet', '--data-dir', str(tmp_path / 'data'),
         '--ways', '3', '--train-ways', '3', '--shots', '1', '--queries', '1', '--eval-queries', '1',
         '--filters', '4', '--blocks', '2', '--log-every', '1', '--eval-episodes', '4', '--valid-episodes', '0',
         '--no-progress', '--seed', '1']
  with pytest.raises(imf.ImageDatasetError, match=r'3 classes \(expected 64\)'):
    cli.main(run + ['--steps', '1', '--out', str(tmp_path / 'strict')])
  out = str(tmp_path / 'run')  # resuming is test_cli.py's (same loop); a resumed run here would cost 8 s more
  record = cli.main(run + ['--no-strict', '--steps', '2', '--out', out])
  assert [m['step'] for m in read_metrics(out)] == [1, 2]
  assert record['ways'] == 3 and record['episodes'] == 4 and 0 <= record['accuracy'] <= 1
  again = cli.main(['eval', out, '--episodes', '4', '--data-dir', str(tmp_path / 'data')])
  assert again['ways'] == 3 and again['episodes'] == 4 and 0 <= again['accuracy'] <= 1
