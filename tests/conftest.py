"""Shared fixtures: the real Omniglot files, preprocessed once per test session into a temporary cache."""

import fcntl
import os
from pathlib import Path

import pytest

from jmeta.runtime import tune_xla_compile

# Faster compiles, here and in every process the tests start (they inherit XLA_FLAGS): the suite is mostly compile
# time, and these settings take a third off its wall time (benchmarks/notes/compile_level.md).
tune_xla_compile()

_REPO = Path(__file__).resolve().parents[1]


def _session_dir(tmp_path_factory) -> Path:
  """A temporary directory that every pytest-xdist worker of this session shares."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


@pytest.fixture(scope='session')
def omniglot_dir(tmp_path_factory):
  """The directory of the Omniglot zips: $JMETA_DATA_DIR, else ../shared/data/omniglot next to the repository.

  Sets $JMETA_DATA_DIR to it and $JMETA_CACHE_DIR to a temporary directory that all pytest-xdist workers of the
  session share, for the rest of the session.
  """
  root = Path(os.environ.get('JMETA_DATA_DIR') or _REPO.parent / 'shared' / 'data' / 'omniglot')
  names = ('images_background.zip', 'images_evaluation.zip', 'all_runs.zip')
  missing = [n for n in names if not (root / n).is_file()]
  if missing:
    pytest.skip(f'real Omniglot data absent: {", ".join(missing)} not in {root} (set JMETA_DATA_DIR)')
  shared = _session_dir(tmp_path_factory)
  (shared / 'jmeta_cache').mkdir(exist_ok=True)
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv('JMETA_DATA_DIR', str(root))
    mp.setenv('JMETA_CACHE_DIR', str(shared / 'jmeta_cache'))
    # Preprocessed here, by the first worker while the others wait: otherwise every worker that starts a run before
    # the cache file exists preprocesses the 32,460 drawings itself (41 s wall at load 13).
    _locked_load(shared)
    yield root


def _locked_load(shared: Path):
  from jmeta.datasets import omniglot
  with open(shared / 'jmeta_cache.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    return omniglot.load()


@pytest.fixture(scope='session')
def omniglot_data(omniglot_dir):
  """`jmeta.datasets.omniglot.load()` of the real data (from the cache that `omniglot_dir` built)."""
  return _locked_load(Path(os.environ['JMETA_CACHE_DIR']).parent)


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """JAX's persistent compilation cache in a directory all workers of the session share, for the tests and the
  `jmeta` processes they start: a run killed and resumed, and its uninterrupted twin, compile their steps once."""
  cache = _session_dir(tmp_path_factory) / 'jax_cache'
  cache.mkdir(exist_ok=True)
  import jax
  jax.config.update('jax_compilation_cache_dir', str(cache))
  # Every program, not only those that took a second: the `jmeta` processes the tests start each compile dozens
  # of small ones (key splits, eager sampling) that are then read back instead.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv('JAX_COMPILATION_CACHE_DIR', str(cache))
    mp.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    yield cache
