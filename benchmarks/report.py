"""The JSON reports the benchmarks write: rows merged by name, under a file lock, so runs side by side can share one."""

from __future__ import annotations

import fcntl
import json
import os
from typing import Callable


def merge(path: str, rows: list[dict], header: dict, order: Callable[[dict], object]) -> dict:
  """Replaces `rows` (by their 'row' name) in the report at `path`, sorted by `order`, and returns the report."""
  with open(path + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    report = {'results': []}
    if os.path.exists(path):
      with open(path) as f:
        report = json.load(f)
    names = {r['row'] for r in rows}
    kept = [r for r in report['results'] if r['row'] not in names]
    report = {**header, 'results': sorted(kept + rows, key=order)}
    with open(path, 'w') as f:
      json.dump(report, f, indent=1)
  return report
