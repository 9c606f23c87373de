"""Preprocessed dataset arrays cached as `.npz` files, written atomically so that a reader never sees half a file."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def save(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
  """Writes `arrays` to `path` (`.npz`, uncompressed) through a temporary file in the same directory and a rename,
  so concurrent readers (several test workers, several processes) see the old file, the new one or none."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.part', dir=path.parent)
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load(path: Path, fields: Sequence[str]) -> dict[str, np.ndarray] | None:
  """The arrays named `fields` from the `.npz` at `path`, or None if it is missing, unreadable or lacks one."""
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in fields}
  except (OSError, ValueError, KeyError, zipfile.BadZipFile):
    return None
