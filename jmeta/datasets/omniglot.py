"""Omniglot (Lake, Salakhutdinov & Tenenbaum, 2015, Science 350(6266)) from the original release zips.

Reads `images_background.zip` and `images_evaluation.zip` (and `all_runs.zip` for the 20 one-shot runs) from
github.com/brendenlake/omniglot (folder `python/`), verifies them by content, preprocesses every drawing once to
`size x size` float32 with ink = 1.0, and caches the result as one `.npz` file. Character `i` of the arrays is the
`i`-th `<Alphabet>/characterNN` folder in the order (background before evaluation, alphabet folder name, character
number); the first 964 characters are the background set, the last 659 the evaluation set.

Where files go: the zips are looked for in the `root` argument, else `$JMETA_DATA_DIR`, else
`$XDG_CACHE_HOME/jmeta/omniglot` (`~/.cache/jmeta/omniglot`). The preprocessed cache goes to the `cache_dir`
argument, else `$JMETA_CACHE_DIR`, else `$XDG_CACHE_HOME/jmeta` (`~/.cache/jmeta`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from PIL import Image

from jmeta.datasets import _npz_cache
from jmeta.tasks import Split, Task

NUM_ALPHABETS = 50
NUM_CHARACTERS = 1623
NUM_BACKGROUND = 964
NUM_EVALUATION = 659
DRAWINGS = 20
SOURCE_SIZE = 105
SPLITS = ('vinyals', 'lake')
"""The split protocols of `splits`."""
SEED = 0
"""Seed of `np.random.RandomState(SEED).permutation(1623)`, the fixed character order of the 'vinyals' split."""

_URL = 'https://github.com/brendenlake/omniglot/raw/master/python/'
RESOURCES = {
    'images_background.zip': (_URL + 'images_background.zip', '68d2efa1b9178cc56df9314c21c6e718'),
    'images_evaluation.zip': (_URL + 'images_evaluation.zip', '6b91aef0f799c5bb55b94e3f2daec811'),
    'all_runs.zip': (_URL + 'one-shot-classification/all_runs.zip', 'e8996daecdf12afeeb4a53a179f06b19'),
}
"""File name -> (download address, md5 of the original release), as torchvision checks them."""

_IMAGE_ZIPS = (('images_background', 30, NUM_BACKGROUND), ('images_evaluation', 20, NUM_EVALUATION))
_PREPROCESSING = 'omniglot-v1: 1-bit PNG -> ink=1.0 float32 -> PIL LANCZOS resize -> clip [0, 1]'
_MEMBER = re.compile(r'(?P<alphabet>[^/]+)/(?P<character>character\d+)/(?P<id>\d+)_(?P<drawing>\d+)\.png')
_RUN_LABEL = re.compile(r'run(\d+)/test/item(\d+)\.png\s+run(\d+)/training/class(\d+)\.png')
_NUM_RUNS = 20
_RUN_WAYS = 20


class OmniglotError(ValueError):
  """The Omniglot files are unreadable, have the wrong content, or could not be downloaded."""


class OmniglotNotFoundError(OmniglotError, FileNotFoundError):
  """An Omniglot file is missing from the data directory."""


class Omniglot(NamedTuple):
  """All 1,623 characters, preprocessed.

  Attributes:
    images: `[1623, 20, size, size]` float32 in [0, 1], 1.0 = ink, 0.0 = background.
    alphabets: `[1623]` str, the alphabet folder of each character.
    characters: `[1623]` str, the character folder (`'character01'`...) within its alphabet.
    ids: `[1623]` int32, the file-name id `IIII` of each character (1-964 background, 965-1623 evaluation).
    background: `[1623]` bool, True for characters of `images_background.zip`.
  """
  images: np.ndarray
  alphabets: np.ndarray
  characters: np.ndarray
  ids: np.ndarray
  background: np.ndarray


class Runs(NamedTuple):
  """The 20 runs of 20-way one-shot classification of Lake et al. (2015), from `all_runs.zip`.

  Attributes:
    train: `[20 runs, 20 classes, size, size, 1]` float32, the one example of each class.
    test: `[20 runs, 20 items, size, size, 1]` float32, the items to classify.
    labels: `[20 runs, 20 items]` int32, the index in `train` of each test item's class.
  """
  train: np.ndarray
  test: np.ndarray
  labels: np.ndarray


def _user_cache() -> Path:
  return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'jmeta'


def data_dir(root: str | os.PathLike | None = None) -> Path:
  """The directory that holds the Omniglot zips: `root`, else `$JMETA_DATA_DIR`, else `<user cache>/omniglot`."""
  if root is not None:
    return Path(root).expanduser()
  if os.environ.get('JMETA_DATA_DIR'):
    return Path(os.environ['JMETA_DATA_DIR']).expanduser()
  return _user_cache() / 'omniglot'


def cache_dir(path: str | os.PathLike | None = None) -> Path:
  """The directory of preprocessed arrays: `path`, else `$JMETA_CACHE_DIR`, else `$XDG_CACHE_HOME/jmeta`."""
  if path is not None:
    return Path(path).expanduser()
  if os.environ.get('JMETA_CACHE_DIR'):
    return Path(os.environ['JMETA_CACHE_DIR']).expanduser()
  return _user_cache()


def _where(root: Path, names=('images_background.zip', 'images_evaluation.zip'), offer_download=True) -> str:
  sources = ', '.join(RESOURCES[n][0] for n in names)
  return (f'Put the original {" and ".join(names)} ({sources}) in {root} (the directory searched: the `root` '
          f'argument, else $JMETA_DATA_DIR, else {_user_cache() / "omniglot"})'
          + (', or pass download=True.' if offer_download else '.'))


def _digest(path: Path, algorithm: str) -> str:
  """The hex digest of a file's bytes, `algorithm` being a `hashlib` name ('md5', 'sha256')."""
  h = hashlib.new(algorithm)
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def download(root: str | os.PathLike | None = None,
             names: tuple[str, ...] = ('images_background.zip', 'images_evaluation.zip', 'all_runs.zip'),
             *, timeout: float = 60.0) -> Path:
  """Downloads the missing files of `names` from the original release into `data_dir(root)`; returns that directory.

  Each download is checked against the md5 of the original release (`RESOURCES`) and only then moved into place.
  Files already present are kept as they are: a local copy is verified by content when it is read, so a rebuilt,
  pixel-identical copy is accepted. Raises `OmniglotError` when a download fails or its checksum differs.
  """
  root = data_dir(root)
  for name in names:
    if name not in RESOURCES:
      raise ValueError(f'unknown Omniglot file {name!r}; expected one of {sorted(RESOURCES)}')
    target = root / name
    if target.exists():
      continue
    url, md5 = RESOURCES[name]
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', suffix='.part', dir=root)
    try:
      with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(url, timeout=timeout) as response:
        shutil.copyfileobj(response, out, 1 << 20)
      got = _digest(Path(tmp), 'md5')
      if got != md5:
        raise OmniglotError(f'Omniglot: the download of {url} has md5 {got}, expected {md5}; it was discarded. '
                            + _where(root, (name,), offer_download=False))
      os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as e:
      hint = _where(root, (name,), offer_download=False)
      raise OmniglotError(f'Omniglot: could not download {url} ({e}). {hint}') from e
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  return root


_download = download


def _check_size(size: int) -> None:
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
    raise ValueError(f'size must be a positive integer; got {size!r}')


def _preprocess(png: bytes, size: int) -> np.ndarray:
  """A 105x105 1-bit PNG (white background, black ink) -> `[size, size]` float32 in [0, 1] with ink = 1.0."""
  with Image.open(io.BytesIO(png)) as im:
    if im.size != (SOURCE_SIZE, SOURCE_SIZE):
      raise OmniglotError(f'image is {im.size[0]}x{im.size[1]}, expected {SOURCE_SIZE}x{SOURCE_SIZE}')
    ink = 1.0 - np.asarray(im.convert('L'), np.float32) / 255.0
  small = Image.fromarray(ink).resize((size, size), Image.Resampling.LANCZOS)
  return np.clip(np.asarray(small, np.float32), 0.0, 1.0)


def _open_zip(path: Path, root: Path, names) -> zipfile.ZipFile:
  if not path.is_file():
    raise OmniglotNotFoundError(f'Omniglot: {path.name} not found in {root}. ' + _where(root, names))
  try:
    return zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    raise OmniglotError(f'Omniglot: {path} is not a readable zip file ({e}). ' + _where(root, names)) from e


def _read(zf: zipfile.ZipFile, member: str, path: Path, root: Path, size: int, names) -> np.ndarray:
  try:
    return _preprocess(zf.read(member), size)
  except Exception as e:  # zipfile (CRC, zlib) and PIL raise many types for a damaged member.
    raise OmniglotError(f'Omniglot: {member} in {path} could not be read as a {SOURCE_SIZE}x{SOURCE_SIZE} PNG '
                        f'({type(e).__name__}: {e}). ' + _where(root, names)) from e


def _read_characters(root: Path, top: str, num_alphabets: int, num_characters: int, size: int):
  """Checks the layout of `<top>.zip` and returns its `[characters, 20, size, size]` images and metadata."""
  path, names = root / f'{top}.zip', (f'{top}.zip',)
  with _open_zip(path, root, names) as zf:
    characters: dict[tuple[str, str], dict[int, tuple[int, str]]] = {}
    for member in zf.namelist():
      if member.endswith('/') or not member.startswith(top + '/') or '/.' in member:
        continue
      m = _MEMBER.fullmatch(member[len(top) + 1:])
      if m is None:
        raise OmniglotError(f'Omniglot: unexpected file {member} in {path}; expected '
                            f'{top}/<Alphabet>/characterNN/IIII_DD.png. ' + _where(root, names))
      drawings = characters.setdefault((m['alphabet'], m['character']), {})
      drawings[int(m['drawing'])] = (int(m['id']), member)
    alphabets = {a for a, _ in characters}
    if len(alphabets) != num_alphabets or len(characters) != num_characters:
      raise OmniglotError(f'Omniglot: {path} holds {len(alphabets)} alphabets and {len(characters)} characters '
                          f'under {top}/, expected {num_alphabets} and {num_characters}. ' + _where(root, names))
    keys = sorted(characters, key=lambda k: (k[0], int(k[1][len('character'):])))
    ids = []
    for key in keys:
      drawings = characters[key]
      char_ids = {i for i, _ in drawings.values()}
      if sorted(drawings) != list(range(1, DRAWINGS + 1)) or len(char_ids) != 1:
        raise OmniglotError(f'Omniglot: {path}: {top}/{key[0]}/{key[1]} has drawings {sorted(drawings)} with ids '
                            f'{sorted(char_ids)}; expected drawings 1..{DRAWINGS} of one id. ' + _where(root, names))
      ids.append(char_ids.pop())
    if len(set(ids)) != len(ids):
      raise OmniglotError(f'Omniglot: {path}: two character folders share a file-name id. ' + _where(root, names))
    images = np.empty((len(keys), DRAWINGS, size, size), np.float32)
    for c, key in enumerate(keys):
      for d in range(DRAWINGS):
        images[c, d] = _read(zf, characters[key][d + 1][1], path, root, size, names)
  return (images, np.array([a for a, _ in keys]), np.array([c for _, c in keys]), np.array(ids, np.int32))


def _cache_path(root: Path, cache: str | os.PathLike | None, size: int) -> Path:
  """The cache file of `load`; its name hashes the preprocessing and the bytes of the two zips."""
  h = hashlib.sha256(f'{_PREPROCESSING} size={size}'.encode())
  for top, _, _ in _IMAGE_ZIPS:
    h.update(_digest(root / f'{top}.zip', 'sha256').encode())
  return cache_dir(cache) / f'omniglot_{size}px_v1_{h.hexdigest()[:16]}.npz'


def _load_cache(path: Path, size: int) -> Omniglot | None:
  arrays = _npz_cache.load(path, Omniglot._fields)
  if arrays is None:
    return None
  data = Omniglot(**arrays)
  if data.images.shape != (NUM_CHARACTERS, DRAWINGS, size, size) or data.images.dtype != np.float32:
    return None
  return data


def load(root: str | os.PathLike | None = None, *, download: bool = False,
         cache_dir: str | os.PathLike | None = None, size: int = 28) -> Omniglot:
  """All 1,623 Omniglot characters, 20 drawings each, as `[1623, 20, size, size]` float32 with ink = 1.0.

  The first call verifies the two zips by content (50 alphabets, 1,623 characters, 20 readable 105x105 PNGs each),
  resizes every drawing with antialiasing (PIL LANCZOS on the float image, clipped to [0, 1]) and saves one `.npz`
  in the cache directory; later calls with the same zips read that file.

  Args:
    root: the directory that holds `images_background.zip` and `images_evaluation.zip`; default `data_dir()`.
    download: fetch missing zips from the original release first (md5-checked).
    cache_dir: where the preprocessed `.npz` goes; default `$JMETA_CACHE_DIR`, else `$XDG_CACHE_HOME/jmeta`.
    size: side of the resized images (28 in Vinyals et al. 2016 and Finn et al. 2017).

  Raises:
    OmniglotNotFoundError: a zip is missing (the message names the directory searched).
    OmniglotError: a zip is unreadable or its content is not Omniglot's.
  """
  _check_size(size)
  root = data_dir(root)
  names = tuple(f'{top}.zip' for top, _, _ in _IMAGE_ZIPS)
  if download:
    _download(root, names)
  missing = [n for n in names if not (root / n).is_file()]
  if missing:
    raise OmniglotNotFoundError(f'Omniglot: {" and ".join(missing)} not found in {root}. ' + _where(root))
  path = _cache_path(root, cache_dir, size)
  data = _load_cache(path, size) if path.exists() else None
  if data is not None:
    return data
  parts = [_read_characters(root, top, a, c, size) for top, a, c in _IMAGE_ZIPS]
  images, alphabets, characters, ids = (np.concatenate(p) for p in zip(*parts))
  alphabet_count, id_count = len(set(alphabets.tolist())), len(set(ids.tolist()))
  if alphabet_count != NUM_ALPHABETS or id_count != NUM_CHARACTERS:
    raise OmniglotError(f'Omniglot: the zips in {root} hold {alphabet_count} distinct alphabets and {id_count} '
                        f'distinct character ids, expected {NUM_ALPHABETS} and {NUM_CHARACTERS}. ' + _where(root))
  background = np.arange(len(images)) < NUM_BACKGROUND
  data = Omniglot(images, alphabets, characters, ids, background)
  _npz_cache.save(path, data._asdict())
  return data


def splits(protocol: str = 'vinyals', *, num_val: int | None = None, seed: int = SEED) -> dict[str, np.ndarray]:
  """Character indices (into `load().images`) of the 'train', 'val' and 'test' parts of a split, each sorted.

  Args:
    protocol: 'vinyals': 1,200 characters for meta-training and 423 for testing, from the fixed permutation
      `np.random.RandomState(seed).permutation(1623)` (first 1,200 / last 423), as Vinyals et al. (2016,
      arXiv:1606.04080) and Finn et al. (2017, arXiv:1703.03400) split, though not their exact draw. 'lake': the
      964 background characters for meta-training and the 659 evaluation characters for testing (Lake et al. 2015).
    num_val: characters moved from meta-training to 'val': the last `num_val` of the training characters in the
      seeded order. Default 100 for 'vinyals' (1,100 / 100 / 423) and 0 for 'lake' (964 / 0 / 659).
    seed: seed of the permutation.
  """
  if protocol == 'vinyals':
    order = np.random.RandomState(seed).permutation(NUM_CHARACTERS)
    trainval, test = order[:1200], order[1200:]
    num_val = 100 if num_val is None else num_val
  elif protocol == 'lake':
    trainval = np.random.RandomState(seed).permutation(NUM_BACKGROUND)
    test = np.arange(NUM_BACKGROUND, NUM_CHARACTERS)
    num_val = 0 if num_val is None else num_val
  else:
    raise ValueError(f"unknown Omniglot split protocol {protocol!r}; expected 'vinyals' or 'lake'")
  if not 0 <= num_val < len(trainval):
    raise ValueError(f'num_val={num_val} must be in [0, {len(trainval)}) for the {protocol!r} protocol')
  cut = len(trainval) - num_val
  return {'train': np.sort(trainval[:cut]), 'val': np.sort(trainval[cut:]), 'test': np.sort(test)}


def rotate(images: np.ndarray) -> np.ndarray:
  """Adds the 90, 180 and 270 degree rotations of each class as new classes.

  Args:
    images: `[classes, examples, H, W, ...]` with H == W.
  Returns:
    `[4 * classes, examples, H, W, ...]`; class `k * classes + c` is `np.rot90(images[c], k, axes=(1, 2))`.
  """
  return np.concatenate([np.rot90(images, k, axes=(2, 3)) for k in range(4)])


def split_images(data: Omniglot, part: str = 'train', protocol: str = 'vinyals', *, rotations: bool = False,
                 num_val: int | None = None, seed: int = SEED) -> np.ndarray:
  """The images of one part of a split, ready for `jmeta.datasets.episodes.episodes`.

  Args:
    data: from `load()`.
    part: 'train', 'val' or 'test'.
    protocol, num_val, seed: as in `splits`.
    rotations: add the rotations by 90, 180 and 270 degrees as new classes (see `rotate`), as Vinyals et al. (2016)
      and Snell et al. (2017) do on every part and Finn et al. (2017) on meta-training: 1,200 characters become
      4,800 classes. `episodes(..., rotations=True)` draws the same classes without storing four copies.
  Returns:
    `[classes, 20, size, size, 1]` float32 (NHWC per example), classes in the order of `splits(...)[part]`.
  """
  parts = splits(protocol, num_val=num_val, seed=seed)
  if part not in parts:
    raise ValueError(f'unknown part {part!r}; expected one of {sorted(parts)}')
  images = data.images[parts[part]][..., None]
  return np.ascontiguousarray(rotate(images) if rotations else images)


def load_runs(root: str | os.PathLike | None = None, *, download: bool = False, size: int = 28) -> Runs:
  """The 20 official one-shot runs of Lake et al. (2015) from `all_runs.zip`, preprocessed as `load` does.

  Each run has 20 training images (one drawing of each of 20 characters) and 20 test items (another drawing of
  each), and `runNN/class_labels.txt` maps each test item to its training class.

  Raises:
    OmniglotNotFoundError: `all_runs.zip` is missing. OmniglotError: it is unreadable or malformed.
  """
  _check_size(size)
  root = data_dir(root)
  names = ('all_runs.zip',)
  if download:
    _download(root, names)
  path = root / names[0]
  train = np.empty((_NUM_RUNS, _RUN_WAYS, size, size, 1), np.float32)
  test = np.empty_like(train)
  labels = np.full((_NUM_RUNS, _RUN_WAYS), -1, np.int32)
  with _open_zip(path, root, names) as zf:
    members = set(zf.namelist())
    for r in range(_NUM_RUNS):
      run = f'run{r + 1:02d}'
      try:
        text = zf.read(f'{run}/class_labels.txt').decode()
      except (KeyError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise OmniglotError(f'Omniglot: {run}/class_labels.txt in {path} is missing or unreadable ({e}). '
                            + _where(root, names)) from e
      for line in text.splitlines():
        if not line.strip():
          continue
        m = _RUN_LABEL.fullmatch(line.strip())
        if m is None or int(m[1]) != r + 1 or int(m[3]) != r + 1:
          raise OmniglotError(f'Omniglot: unexpected line {line!r} in {run}/class_labels.txt of {path}')
        labels[r, int(m[2]) - 1] = int(m[4]) - 1
      if labels[r].min() < 0 or labels[r].max() >= _RUN_WAYS:
        raise OmniglotError(f'Omniglot: {run}/class_labels.txt in {path} does not label items 1..{_RUN_WAYS} '
                            f'with classes 1..{_RUN_WAYS}')
      for i in range(_RUN_WAYS):
        for out, member in ((train, f'{run}/training/class{i + 1:02d}.png'), (test, f'{run}/test/item{i + 1:02d}.png')):
          if member not in members:
            raise OmniglotError(f'Omniglot: {member} is missing from {path}. ' + _where(root, names))
          out[r, i, ..., 0] = _read(zf, member, path, root, size, names)
  return Runs(train, test, labels)


def run_tasks(runs: Runs) -> Task:
  """The 20 runs as a meta-batch of 20 tasks of 20-way one-shot classification (400 test trials in all).

  Returns:
    `Task` with support x `[20, 20, H, W, 1]` (one example per class), y `[20, 20]` = 0..19, and query x
    `[20, 20, H, W, 1]`, y `[20, 20]` the class of each test item. Accuracy on the query is the paper's metric.
  """
  num_runs, ways = runs.labels.shape
  support_y = jnp.broadcast_to(jnp.arange(ways, dtype=jnp.int32), (num_runs, ways))
  return Task(Split(jnp.asarray(runs.train), support_y), Split(jnp.asarray(runs.test), jnp.asarray(runs.labels)))


def _models(c):
  """conv4 as each learner needs it: Finn et al.'s classifier (stride 2, a `ways`-way head), Snell et al.'s
  embedding (max-pooling) or Sung et al.'s feature maps."""
  from jmeta.models import conv4

  def model(role: str):
    if role == 'predictor':
      return conv4.functional(conv4.Classifier(conv4.conv4_maml(c.filters, c.blocks), c.ways))
    if role == 'embedding':
      return conv4.functional(conv4.conv4_protonet(c.filters, c.blocks))
    if role == 'feature_map':
      return conv4.functional(conv4.conv4_relation(c.filters, c.blocks))
    raise ValueError(f'omniglot provides predictor, embedding and feature_map models, not {role!r}')

  return model


def _load(c, data_dir: str | None = None):
  """The registry's Omniglot: episodes of the split's train, validation and test characters, conv4 models."""
  from jmeta import losses
  from jmeta.datasets.episodes import episodes
  from jmeta.experiments import Data
  if c.blocks > 4:
    raise ValueError(f'blocks: at most 4 for Omniglot\'s 28x28 images, which each block halves; got {c.blocks}')
  data = load(data_dir)
  parts = {part: split_images(data, part, c.split) for part in ('train', 'val', 'test')}
  if not len(parts['val']):
    parts['val'] = parts['test']  # Lake et al.'s split has no validation characters.
  rotations = c.split == 'vinyals'
  train_tasks = episodes(parts['train'], c.train_ways, c.shots, c.queries, rotations=rotations)
  valid_tasks, test_tasks = (episodes(parts[p], c.ways, c.shots, c.eval_queries, rotations=rotations)
                             for p in ('val', 'test'))
  return Data(train_tasks=train_tasks, valid_tasks=valid_tasks, test_tasks=test_tasks, model=_models(c),
              example_x=parts['train'][:2, 0], loss_fn=losses.cross_entropy,
              metrics_fn=lambda logits, labels: {'accuracy': losses.accuracy(logits, labels)},
              score=losses.accuracy, metric='accuracy')


def _official_runs(experiment, params, data_dir: str | None, inner_steps: int | None) -> dict:
  """20-way one-shot accuracy over the 400 trials of Lake et al.'s 20 official runs."""
  from jmeta.evaluation import correct_predictions, summarize
  kwargs = {'steps': inner_steps} if experiment.inner_steps else {}
  hits = correct_predictions(experiment.test_learner, params, run_tasks(load_runs(data_dir)), **kwargs)
  summary = summarize(hits.ravel())
  return {'accuracy': summary.mean, 'ci95': summary.ci95, 'ways': 20, 'shots': 1, 'episodes': hits.shape[0],
          'trials': hits.size, 'protocol': 'lake2015_official_runs'}


def _register() -> None:
  from jmeta.datasets.episodes import episode_options
  from jmeta.experiments import Dataset, Evaluation, Option, register_dataset
  register_dataset(Dataset(
      name='omniglot', kind='classification',
      summary='1,623 handwritten characters of 50 alphabets, 20 drawings each, 28x28 (Lake et al., 2015)',
      options=(
          *episode_options(),
          Option('split', 'vinyals (1,200 characters + rotations for training, the default) or lake (background / '
                 'evaluation)', str, default='vinyals', choices=SPLITS),
          Option('filters', 'conv4 filters (default 64)', default=64),
          # Fewer blocks: a smaller model whose programs compile in about blocks/4 of the time (the tests' short
          # runs use 2); every published figure is for 4.
          Option('blocks', 'conv4 blocks, at most 4 (default 4, as the papers)', minimum=1,
                 default=4),
      ),
      # 5-way 1-shot; 15 queries per class while training and testing, as the metric-learning papers do.
      defaults=dict(ways=5, shots=1, queries=15, eval_queries=15),
      load=_load,
      evaluations=(Evaluation('--official-runs', '20-way one-shot accuracy over the 400 trials of the 20 official '
                              'runs of Lake et al. (2015), from all_runs.zip', _official_runs,
                              {'ways': 20, 'shots': 1}),)))


_register()
