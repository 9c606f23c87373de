"""Few-shot colour-image datasets from the files people already have: mini-ImageNet, tiered-ImageNet, CIFAR-FS, FC100.

None of them is downloaded: each loader reads the files of the form the field passes around, checks what it read
against the standard split (classes per split, images per class, image shape), caches the arrays as one `.npz` and
says, when a file is missing, which names it looked for and where.

- mini-imagenet: `mini-imagenet-cache-{train,validation,test}.pkl` (learn2learn's; `-val.pkl` also read), or Ravi
  & Larochelle's `{train,val,test}.csv` (`filename,label`) over `images/`. 64 / 16 / 20 classes of 600, 84x84x3.
- tiered-imagenet: `{train,val,test}_images_png.pkl` (PNG bytes) with `{train,val,test}_labels.pkl`
  (`label_specific`). 351 / 97 / 160 classes; 448,695 / 124,261 / 206,209 images (779,165); 84x84x3.
- cifar-fs: `splits/bertinetto/{train,val,test}.txt` (class names) over `data/<class>/*.png` (CIFAR-100's class
  folders). 64 / 16 / 20 classes of 600, 32x32x3.
- fc100: `FC100_{train,val,test}.pickle` (latin1; `data` [N, 32, 32, 3], `labels`). 60 / 20 / 20 classes of 600,
  32x32x3.

Sources of the standard figures, each as the docstring of learn2learn's loader states it
(learn2learn/vision/datasets/{mini_imagenet,tiered_imagenet,cifarfs,fc100}.py): mini-ImageNet (Vinyals et al.,
2016; Ravi & Larochelle's split, 2017): 64 / 16 / 20 classes of 600 84x84 images; tiered-ImageNet (Ren et al.,
2018, arXiv:1803.00676): 351 classes and 448,695 images / 97 and 124,261 / 160 and 206,209 (608 and 779,165 in
all, as y2l/tiered-imagenet-tools' README also gives); CIFAR-FS (Bertinetto et al., 2019, arXiv:1805.08136):
64 / 16 / 20 classes of 600 32x32 images; FC100 (Oreshkin et al., 2018, arXiv:1805.10123): 60 / 20 / 20 classes of
600.

Where files go: the `root` argument (`--data-dir`), else `$JMETA_DATA_DIR/<dataset>`, else
`$XDG_CACHE_HOME/jmeta/<dataset>`. The cache goes where Omniglot's does (`jmeta.datasets.omniglot.cache_dir`); its
name hashes the names, sizes and modification times of the files read, so a changed file is read again.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import pickle
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jmeta.checks import check_positive_int
from jmeta.datasets import _npz_cache
from jmeta.tasks import Split, Task

SPLITS = ('train', 'val', 'test')


class ImageDatasetError(ValueError):
  """A dataset's files are unreadable, malformed, or do not hold the standard split."""


class ImageFilesNotFoundError(ImageDatasetError, FileNotFoundError):
  """A dataset's files are missing from the data directory."""


class Standard(NamedTuple):
  """The standard split of a dataset: classes per split, images per class (None where it varies, with `images`
  per split instead), the image shape, the file layout and where the figures come from."""
  classes: dict
  per_class: int | None
  images: dict | None
  shape: tuple[int, int, int]
  layout: str
  source: str


STANDARD = {
    'mini-imagenet': Standard(
        {'train': 64, 'val': 16, 'test': 20}, 600, None, (84, 84, 3),
        'mini-imagenet-cache-{train,validation,test}.pkl (learn2learn; -val.pkl also accepted), or '
        '{train,val,test}.csv (filename,label) with the JPEGs in images/ (Ravi & Larochelle)',
        'Vinyals et al. (2016); the split of Ravi & Larochelle (2017); learn2learn MiniImagenet'),
    'tiered-imagenet': Standard(
        {'train': 351, 'val': 97, 'test': 160}, None, {'train': 448_695, 'val': 124_261, 'test': 206_209},
        (84, 84, 3), '{train,val,test}_images_png.pkl with {train,val,test}_labels.pkl',
        'Ren et al. (2018, arXiv:1803.00676): 608 classes, 779,165 images'),
    'cifar-fs': Standard(
        {'train': 64, 'val': 16, 'test': 20}, 600, None, (32, 32, 3),
        'splits/bertinetto/{train,val,test}.txt over data/<class>/*.png (a cifar100/ folder above them is fine)',
        'Bertinetto et al. (2019, arXiv:1805.08136)'),
    'fc100': Standard(
        {'train': 60, 'val': 20, 'test': 20}, 600, None, (32, 32, 3), 'FC100_{train,val,test}.pickle',
        'Oreshkin et al. (2018, arXiv:1805.10123); learn2learn FC100'),
}
"""The standard split of each dataset, as `load(..., strict=True)` checks it."""


class ImageSplit(NamedTuple):
  """One split's images, grouped by class.

  Attributes:
    images: `[N, H, W, 3]` uint8; class `c` is `images[offsets[c]:offsets[c + 1]]`.
    offsets: `[classes + 1]` int64, from 0 to N.
    names: `[classes]` str, the class names (wnids, CIFAR-100 names or label numbers), sorted.
  """
  images: np.ndarray
  offsets: np.ndarray
  names: np.ndarray

  @property
  def counts(self) -> np.ndarray:
    """`[classes]` images per class."""
    return np.diff(self.offsets)

  def dense(self) -> np.ndarray:
    """`[classes, per_class, H, W, 3]` uint8, for `jmeta.datasets.episodes.episodes`; needs equal class sizes."""
    counts = self.counts
    if len(counts) == 0 or (counts != counts[0]).any():
      raise ValueError(f'dense(): classes hold {counts.min()}..{counts.max()} images; use ragged_episodes')
    return self.images.reshape(len(counts), counts[0], *self.images.shape[1:])


def data_dir(name: str, root: str | os.PathLike | None = None) -> Path:
  """The directory of `name`'s files: `root`, else `$JMETA_DATA_DIR/<name>`, else `<user cache>/jmeta/<name>`."""
  if root is not None:
    return Path(root).expanduser()
  if os.environ.get('JMETA_DATA_DIR'):
    return Path(os.environ['JMETA_DATA_DIR']).expanduser() / name
  return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'jmeta' / name


def _where(name: str, root: Path) -> str:
  s = STANDARD[name]
  return (f'Put {s.layout} in {root} (searched: the root argument or --data-dir, else $JMETA_DATA_DIR/{name}, '
          f'else ~/.cache/jmeta/{name}). They are not downloaded.')


def _fail(name: str, root: Path, message: str, missing: bool = False) -> ImageDatasetError:
  cls = ImageFilesNotFoundError if missing else ImageDatasetError
  return cls(f'{name}: {message}. ' + _where(name, root))


def _unpickle(path: Path, name: str, root: Path):
  try:
    with open(path, 'rb') as f:
      return pickle.load(f, encoding='latin1')  # the files were written by Python 2
  except Exception as e:  # pickle raises many types for a damaged file.
    raise _fail(name, root, f'{path} is not a readable pickle ({type(e).__name__}: {e})') from e


def _decode(data: bytes, what: str, name: str, root: Path, size: int | None = None) -> np.ndarray:
  """Encoded image bytes -> `[H, W, 3]` uint8, resized to `size x size` (PIL LANCZOS) if given."""
  try:
    with Image.open(io.BytesIO(data)) as im:
      im = im.convert('RGB')
      if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.LANCZOS)
      return np.asarray(im, np.uint8)
  except Exception as e:  # PIL raises many types for a damaged image.
    raise _fail(name, root, f'{what} could not be read as an image ({type(e).__name__}: {e})') from e


def _group(images: np.ndarray, labels, name: str, root: Path, what: str) -> tuple[list, list]:
  """Images with one label each -> (sorted class names, `[n_c, H, W, 3]` arrays)."""
  labels = np.asarray(labels)
  if images.ndim != 4 or images.shape[-1] != 3 or len(labels) != len(images):
    raise _fail(name, root, f'{what} holds images of shape {images.shape} and {len(labels)} labels; expected '
                f'[N, H, W, 3] and N labels')
  classes = sorted(set(labels.tolist()))
  return [str(c) for c in classes], [images[labels == c] for c in classes]


def _mini_files(root: Path, split: str, name: str) -> list[Path]:
  stems = ('validation', 'val') if split == 'val' else (split,)
  for path in [root / f'mini-imagenet-cache-{s}.pkl' for s in stems] + [root / f'{split}.csv']:
    if path.is_file():
      return [path]
  raise _fail(name, root, f'neither mini-imagenet-cache-{stems[0]}.pkl nor {split}.csv found in {root}', missing=True)


def _read_mini_imagenet(root: Path, files: list[Path], name: str):
  return (_mini_csv if files[0].suffix == '.csv' else _mini_pickle)(root, files[0], name)


def _mini_pickle(root: Path, path: Path, name: str):
  archive = _unpickle(path, name, root)
  if not isinstance(archive, dict) or not {'image_data', 'class_dict'} <= set(archive):
    raise _fail(name, root, f'{path} holds {type(archive).__name__} '
                f'{sorted(archive) if isinstance(archive, dict) else ""}; expected a dict with image_data and '
                'class_dict')
  data = np.asarray(archive['image_data'])
  if data.ndim != 4 or data.shape[-1] != 3:
    raise _fail(name, root, f'{path}: image_data has shape {data.shape}; expected [N, 84, 84, 3]')
  names = sorted(archive['class_dict'])
  try:
    arrays = [data[np.asarray(archive['class_dict'][c], np.int64)] for c in names]
  except IndexError as e:
    raise _fail(name, root, f'{path}: class_dict indexes past the {len(data)} images ({e})') from e
  return names, arrays


def _mini_csv(root: Path, path: Path, name: str):
  by_class: dict[str, list[str]] = {}
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  if not rows or [c.strip() for c in rows[0]] != ['filename', 'label']:
    raise _fail(name, root, f'{path} starts with {rows[:1]}; expected the header filename,label')
  for row in rows[1:]:
    if len(row) != 2:
      raise _fail(name, root, f'{path}: row {row} is not filename,label')
    by_class.setdefault(row[1], []).append(row[0])
  names = sorted(by_class)
  arrays = []
  for c in names:
    images = []
    for file in by_class[c]:
      image = root / 'images' / file
      if not image.is_file():
        raise _fail(name, root, f'{image} (listed in {path}) not found', missing=True)
      images.append(_decode(image.read_bytes(), str(image), name, root, size=STANDARD[name].shape[0]))
    arrays.append(np.stack(images))
  return names, arrays


def _tiered_files(root: Path, split: str, name: str) -> list[Path]:
  paths = [root / f'{split}_images_png.pkl', root / f'{split}_labels.pkl']
  missing = [p.name for p in paths if not p.is_file()]
  if missing:
    raise _fail(name, root, f'{" and ".join(missing)} not found in {root}', missing=True)
  return paths


def _read_tiered_imagenet(root: Path, paths: list[Path], name: str):
  encoded, labels = (_unpickle(p, name, root) for p in paths)
  if not isinstance(labels, dict) or 'label_specific' not in labels:
    raise _fail(name, root, f'{paths[1]} has no label_specific entry; expected a dict with label_specific')
  images = np.stack([_decode(bytes(np.asarray(e, np.uint8)), f'image {i} of {paths[0]}', name, root)
                     for i, e in enumerate(encoded)]) if len(encoded) else np.zeros((0, 0, 0, 3), np.uint8)
  return _group(images, labels['label_specific'], name, root, str(paths[0]))


def _cifar_fs_files(root: Path, split: str, name: str) -> list[Path]:
  base = root / 'cifar100' if (root / 'cifar100' / 'splits').is_dir() else root
  path = base / 'splits' / 'bertinetto' / f'{split}.txt'
  if not path.is_file():
    raise _fail(name, root, f'{path.relative_to(root)} not found in {root}', missing=True)
  return [path]


def _read_cifar_fs(root: Path, files: list[Path], name: str):
  path = files[0]
  base = path.parents[2]
  names = sorted(line.strip() for line in path.read_text().splitlines() if line.strip())
  arrays = []
  for c in names:
    files = sorted((base / 'data' / c).glob('*.png'))
    if not files:
      raise _fail(name, root, f'no PNG images in {base / "data" / c} (class {c} of {path.name})', missing=True)
    arrays.append(np.stack([_decode(f.read_bytes(), str(f), name, root) for f in files]))
  return names, arrays


def _fc100_files(root: Path, split: str, name: str) -> list[Path]:
  path = root / f'FC100_{split}.pickle'
  if not path.is_file():
    raise _fail(name, root, f'{path.name} not found in {root}', missing=True)
  return [path]


def _read_fc100(root: Path, files: list[Path], name: str):
  path = files[0]
  archive = _unpickle(path, name, root)
  if not isinstance(archive, dict) or not {'data', 'labels'} <= set(archive):
    raise _fail(name, root, f'{path} is not a dict with data and labels')
  return _group(np.asarray(archive['data'], np.uint8), archive['labels'], name, root, str(path))


_FORMATS: dict[str, tuple[Callable, Callable]] = {
    'mini-imagenet': (_mini_files, _read_mini_imagenet), 'tiered-imagenet': (_tiered_files, _read_tiered_imagenet),
    'cifar-fs': (_cifar_fs_files, _read_cifar_fs), 'fc100': (_fc100_files, _read_fc100)}
"""Dataset -> (`files(root, split, name)`: the split's files, raising when missing; `read(root, files, name)`:
(sorted class names, `[n_c, H, W, 3]` uint8 per class))."""


def check(name: str, split: str, data: ImageSplit, *, strict: bool = True, where: Path | None = None) -> None:
  """Raises `ImageDatasetError` unless `data` is a consistent split; with `strict`, unless it is the standard one
  (`STANDARD[name]`: classes, images per class or in all, image shape), naming the expected and found figures."""
  root = where or data_dir(name)
  counts = data.counts
  if len(counts) == 0 or counts.min() < 1:
    raise _fail(name, root, f'the {split} split holds {len(counts)} classes, some empty; expected at least one '
                'image a class')
  if not strict:
    return
  s = STANDARD[name]
  found = []
  if len(counts) != s.classes[split]:
    found.append(f'{len(counts)} classes (expected {s.classes[split]})')
  if s.per_class is not None and (counts != s.per_class).any():
    found.append(f'{counts.min()}..{counts.max()} images a class (expected {s.per_class})')
  if s.images is not None and counts.sum() != s.images[split]:
    found.append(f'{counts.sum()} images (expected {s.images[split]})')
  if tuple(data.images.shape[1:]) != s.shape:
    found.append(f'images of shape {tuple(data.images.shape[1:])} (expected {s.shape})')
  if found:
    raise _fail(name, root, f'the {split} split is not the standard one ({s.source}): it holds {", ".join(found)}; '
                'pass strict=False (--no-strict) to use other files')


def _cache_path(name: str, split: str, files, cache) -> Path:
  from jmeta.datasets.omniglot import cache_dir
  h = hashlib.sha256(f'{name} {split} v1'.encode())
  for f in files:
    st = f.stat()
    h.update(f'{f.name} {st.st_size} {st.st_mtime_ns}'.encode())
  return cache_dir(cache) / f'{name}_{split}_v1_{h.hexdigest()[:16]}.npz'


def _read_cache(path: Path) -> ImageSplit | None:
  arrays = _npz_cache.load(path, ImageSplit._fields)
  return None if arrays is None else ImageSplit(**arrays)


def load(name: str, split: str = 'train', root: str | os.PathLike | None = None, *, strict: bool = True,
         cache_dir: str | os.PathLike | None = None) -> ImageSplit:
  """One split of a few-shot image dataset, read from local files (see the module's table), checked and cached.

  Args:
    name: 'mini-imagenet', 'tiered-imagenet', 'cifar-fs' or 'fc100'.
    split: 'train', 'val' or 'test'.
    root: the directory of the files; default `data_dir(name)`.
    strict: check the standard split's class count, images per class (or in all) and shape; False accepts any
      consistent files (smaller subsets, other sizes), as the tests' synthetic files are.
    cache_dir: where the `.npz` goes; default `jmeta.datasets.omniglot.cache_dir()`.

  Returns:
    `ImageSplit` with `images: [N, H, W, 3]` uint8 grouped by class.

  Raises:
    ImageFilesNotFoundError: a file is missing (the message names the files and the directory searched).
    ImageDatasetError: a file is unreadable, or (strict) the split is not the standard one.
  """
  if name not in STANDARD:
    raise ValueError(f'unknown dataset {name!r}; expected one of {", ".join(STANDARD)}')
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; expected one of {", ".join(SPLITS)}')
  root = data_dir(name, root)
  if not root.is_dir():
    raise _fail(name, root, f'the directory {root} does not exist', missing=True)
  find, read = _FORMATS[name]
  files = find(root, split, name)
  path = _cache_path(name, split, files, cache_dir)
  data = _read_cache(path) if path.exists() else None
  if data is None:
    names, arrays = read(root, files, name)
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
      raise _fail(name, root, f'the {split} split mixes image shapes {sorted(shapes)}')
    counts = [len(a) for a in arrays]
    data = ImageSplit(np.ascontiguousarray(np.concatenate(arrays) if arrays else np.zeros((0, 1, 1, 3), np.uint8),
                                           dtype=np.uint8),
                      np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), np.array(names, dtype=str))
    check(name, split, data, strict=strict, where=root)
    _npz_cache.save(path, data._asdict())
  check(name, split, data, strict=strict, where=root)
  return data


def _scaled(sampler, key: jax.Array) -> Task:
  """A task of `sampler` with uint8 pixels as float32 in [0, 1]."""
  task = sampler(key)
  to_float = lambda s: Split(s.x.astype(jnp.float32) / 255.0, s.y)
  return Task(to_float(task.support), to_float(task.query))


def ragged_episodes(data: ImageSplit, ways: int, shots: int, queries: int) -> Callable[[jax.Array], Task]:
  """An N-way K-shot sampler over classes of different sizes (tiered-ImageNet); pure, like `episodes.episodes`.

  Each episode draws `ways` distinct classes in a random order (label `i` for the `i`-th), then `shots + queries`
  distinct images of each (the `shots + queries` largest of uniform draws over the class's images), the first
  `shots` to the support set. Returns `sampler(key) -> Task` with x `[ways * shots, H, W, 3]` uint8.
  """
  ways, shots, queries = (check_positive_int(v, n)
                          for v, n in ((ways, 'ways'), (shots, 'shots'), (queries, 'queries')))
  counts = data.counts
  if ways > len(counts):
    raise ValueError(f'ways={ways} exceeds the {len(counts)} classes of the split')
  if shots + queries > counts.min():
    raise ValueError(f'shots + queries = {shots + queries} exceeds the {counts.min()} images of the smallest class')
  episode = functools.partial(_ragged_episode, ways=ways, shots=shots, queries=queries, largest=int(counts.max()))
  return jax.tree_util.Partial(episode, jnp.asarray(data.images), jnp.asarray(data.offsets, jnp.int32))


def _ragged_episode(images, offsets, key, *, ways, shots, queries, largest):
  from jmeta.datasets.episodes import _check_key, _choice
  _check_key(key)
  class_key, example_key = jax.random.split(key)
  classes = _choice(class_key, offsets.shape[0] - 1, ways)
  start, count = offsets[classes], offsets[classes + 1] - offsets[classes]
  u = jax.random.uniform(example_key, (ways, largest))
  u = jnp.where(jnp.arange(largest) < count[:, None], u, -1.0)
  rows = start[:, None] + jax.lax.top_k(u, shots + queries)[1]
  x = images[rows]
  labels = jnp.arange(ways, dtype=jnp.int32)
  support = Split(x[:, :shots].reshape(ways * shots, *images.shape[1:]), jnp.repeat(labels, shots))
  query = Split(x[:, shots:].reshape(ways * queries, *images.shape[1:]), jnp.repeat(labels, queries))
  return Task(support, query)


def sampler(data: ImageSplit, ways: int, shots: int, queries: int) -> Callable[[jax.Array], Task]:
  """`sampler(key) -> Task` with float32 pixels in [0, 1]: `episodes.episodes` when the classes are of one size,
  `ragged_episodes` otherwise."""
  from jmeta.datasets.episodes import episodes
  counts = data.counts
  if len(counts) and (counts == counts[0]).all():
    inner = episodes(data.dense(), ways, shots, queries)
  else:
    inner = ragged_episodes(data, ways, shots, queries)
  return jax.tree_util.Partial(_scaled, inner)


def _models(c):
  """conv4 with max-pooling (Finn et al.'s mini-ImageNet model, Snell et al.'s encoder) or ResNet-12."""
  from jmeta.models import conv4
  from jmeta.models.resnet12 import resnet12

  def model(role: str):
    encoder = conv4.conv4_protonet(c.filters, c.blocks) if c.encoder == 'conv4' else resnet12()
    if role == 'predictor':
      return conv4.functional(conv4.Classifier(encoder, c.ways))
    if role == 'embedding':
      return conv4.functional(encoder)
    if role == 'feature_map' and c.encoder == 'conv4':
      return conv4.functional(conv4.conv4_relation(c.filters, c.blocks))
    raise ValueError(f'{c.dataset} provides predictor and embedding models (and feature_map with conv4), '
                     f'not {role!r}')

  return model


def _load(c, data_dir: str | None = None):
  from jmeta import losses
  from jmeta.experiments import Data
  parts = {s: load(c.dataset, s, data_dir, strict=c.strict) for s in SPLITS}
  train = sampler(parts['train'], c.train_ways, c.shots, c.queries)
  valid, test = (sampler(parts[s], c.ways, c.shots, c.eval_queries) for s in ('val', 'test'))
  example = parts['train'].images[:2].astype(np.float32) / 255.0
  return Data(train_tasks=train, valid_tasks=valid, test_tasks=test, model=_models(c), example_x=example,
              loss_fn=losses.cross_entropy,
              metrics_fn=lambda logits, labels: {'accuracy': losses.accuracy(logits, labels)},
              score=losses.accuracy, metric='accuracy')


def _register() -> None:
  from jmeta.datasets.episodes import episode_options
  from jmeta.experiments import Dataset, Option, register_dataset
  summaries = {'mini-imagenet': '100 ImageNet classes, 600 images each, 84x84 (Vinyals et al., 2016)',
               'tiered-imagenet': '608 ImageNet classes in 34 groups, 779,165 images, 84x84 (Ren et al., 2018)',
               'cifar-fs': '100 CIFAR-100 classes, 600 images each, 32x32 (Bertinetto et al., 2019)',
               'fc100': '100 CIFAR-100 classes split by superclass, 32x32 (Oreshkin et al., 2018)'}
  for name, summary in summaries.items():
    register_dataset(Dataset(
        name=name, kind='classification', summary=summary + ', from local files',
        options=(
            *episode_options(),
            Option('encoder', 'conv4 (max-pooled blocks, the default) or resnet12', str, default='conv4',
                   choices=('conv4', 'resnet12')),
            # 32: Finn et al. (2017), section 5.2, on mini-ImageNet, to reduce overfitting.
            Option('filters', 'conv4 filters (default 32)', default=32),
            # Fewer blocks compile faster (the tests' short runs use 2); every published figure is for 4.
            Option('blocks', 'conv4 blocks (default 4, as the papers)', default=4),
            Option('strict', 'check the standard split (classes, images, shapes); --no-strict for other files',
                   bool, default=True, false_flag='--no-strict'),
        ),
        # 5-way 1-shot, 15 queries per class, as Ravi & Larochelle (2017) and Finn et al. (2017) test.
        defaults=dict(ways=5, shots=1, queries=15, eval_queries=15),
        load=_load))


_register()
