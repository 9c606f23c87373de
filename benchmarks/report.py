"""The JSON reports the benchmarks write: rows merged by name, under a file lock, so runs side by side can share one."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from typing import Callable, NamedTuple


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


def matmul_rates(quick: bool = False) -> dict:
  """This machine's float32 matmul rates now, in GFLOP/s by size and 'best' (`jmeta.bench.timing.matmul_gflops`, two
  sizes), to record beside each figure; `quick`: one small size, a smoke test's figure (milliseconds, not seconds)."""
  from jmeta.bench.timing import matmul_gflops
  return matmul_gflops(sizes=(512,), repeats=3) if quick else matmul_gflops()


def matmul_rate(quick: bool = False) -> float:
  """`matmul_rates(quick)['best']`, to 0.1 GFLOP/s."""
  return round(matmul_rates(quick)['best'], 1)


class TrainRun(NamedTuple):
  """A finished `jmeta train` subprocess.

  Attributes:
    facts: 'wall_seconds', 'matmul_gflops_before' and '_after', 'cores', and 'error' (the last line of stderr) if
      the process failed.
    result: the JSON summary the command printed last, or None if it failed.
    records: the lines of the run's `metrics.jsonl`.
    config: the run's `config.json`.
  """
  facts: dict
  result: dict | None
  records: list[dict]
  config: dict | None


def run_train(cmd: list[str], out: str, resume: bool = False, quick: bool = False) -> TrainRun:
  """Runs `cmd`, a `jmeta ...` command line writing to `out`, as `python -m jmeta.cli` (with `--resume` if asked)
  and reads back what it wrote; `quick`: the smoke test's small matmul-rate measurement (`matmul_rate`)."""
  before = matmul_rate(quick)
  t0 = time.perf_counter()
  done = subprocess.run([sys.executable, '-m', 'jmeta.cli'] + cmd[1:] + (['--resume'] if resume else []),
                        capture_output=True, text=True)
  facts = {'wall_seconds': round(time.perf_counter() - t0, 1), 'matmul_gflops_before': before,
           'matmul_gflops_after': matmul_rate(quick), 'cores': len(os.sched_getaffinity(0))}
  if done.returncode != 0:
    stderr = done.stderr.strip()
    return TrainRun({**facts, 'error': stderr.splitlines()[-1] if stderr else 'failed'}, None, [], None)
  with open(os.path.join(out, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f if line.strip()]
  with open(os.path.join(out, 'config.json')) as f:
    config = json.load(f)
  return TrainRun(facts, json.loads(done.stdout.strip().splitlines()[-1]), records, config)
