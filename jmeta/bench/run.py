"""`jmeta bench`: time each case's meta-step with each implementation, each in a fresh process; JSON and a table.

    jmeta bench                                   # every case, jmeta and (if installed) PyTorch
    jmeta bench --case maml2_omniglot_5w1s --json out.json
    jmeta bench --quick                           # small shapes, a few steps: checks the harness
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import queue
import subprocess
import sys
from typing import Any, Sequence

from jmeta.bench.cases import CASES, Case, quick

JAX_IMPLS = ('jmeta', 'jmeta_loop')
MALLOC = ('tuned', 'default')


def torch_available() -> bool:
  import importlib.util
  return importlib.util.find_spec('torch') is not None


def impls_of(case: Case, torch: bool) -> tuple[str, ...]:
  """'jmeta' and 'jmeta_loop' (not for ProtoNets' single episode), and PyTorch's if `torch`."""
  ours = JAX_IMPLS[:1] if case.kind == 'protonet' else JAX_IMPLS
  if not torch:
    return ours
  from jmeta.bench import torch_impl
  return ours + torch_impl.impls(case)


def _child(job: dict[str, Any], malloc: str, cpus: set[int] | None = None) -> dict[str, Any]:
  env = {**os.environ, 'JMETA_MALLOC': malloc}
  pin = None if cpus is None else lambda: os.sched_setaffinity(0, cpus)
  done = subprocess.run([sys.executable, '-m', 'jmeta.bench.run', '--child', json.dumps(job)], capture_output=True,
                        text=True, env=env, preexec_fn=pin)
  lines = done.stdout.strip().splitlines()
  if done.returncode != 0 or not lines:
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f'exit status {done.returncode}'
    return {'error': last}
  return json.loads(lines[-1])


def measure(case: Case, impl: str, steps: int, malloc: str = 'tuned', flops: bool = False,
            cpus: set[int] | None = None) -> dict[str, Any]:
  """One record: `case`'s step with `impl`, timed over `steps` steps in a fresh process (confined to `cpus` if
  given); with `flops`, the same process then counts the step's model FLOPs (`jax_impl.model_flops`)."""
  job = {'what': 'step', 'case': dataclasses.asdict(case), 'impl': impl, 'steps': steps, 'flops': flops}
  record = {'case': case.name, 'impl': impl, **_child(job, malloc, cpus), 'malloc': malloc}
  return record if cpus is None else {**record, 'cpus': sorted(cpus)}


def matmul_gflops() -> dict[str, float]:
  return _child({'what': 'matmul'}, 'tuned')


def _run_child(job: dict[str, Any]) -> dict[str, Any]:
  from jmeta.runtime import tune_malloc
  tune_malloc()
  from jmeta.bench import timing
  if job['what'] == 'matmul':
    return timing.matmul_gflops()
  case = Case(**job['case'])
  record = timing.measure(case, job['impl'], job['steps'])
  if job.get('flops'):
    record['model_flops'] = timing.model_flops(case)  # after the timing, so its compile is not in peak_mb
  return record


def machine() -> dict[str, Any]:
  import jax
  info = {'cpus': os.cpu_count(), 'platform': platform.platform(), 'processor': platform.processor(),
          'python': platform.python_version(), 'jax': jax.__version__, 'backend': jax.default_backend(),
          'xla_flags': os.environ.get('XLA_FLAGS', '')}
  if torch_available():
    import torch
    info['torch'] = torch.__version__
  return info


def _fmt(value: Any, spec: str) -> str:
  return '-' if value is None else format(value, spec)


def table(records: list[dict[str, Any]]) -> str:
  """Markdown: per case and implementation the step time, compile time, throughput, memory, achieved GFLOP/s and
  fraction of matmul throughput, and jmeta's speedup over each implementation."""
  lines = ['| case | impl | median ms | compile s | tasks/s | peak MB | GFLOP/s | % of matmul | jmeta speedup |',
           '|---|---|---|---|---|---|---|---|---|']
  ours = {r['case']: r['median_ms'] for r in records if r['impl'] == 'jmeta' and 'median_ms' in r}
  for r in records:
    if 'error' in r:
      lines.append(f"| {r['case']} | {r['impl']} | error: {r['error']} | | | | | | |")
      continue
    speedup = r['median_ms'] / ours[r['case']] if r['case'] in ours else None
    fraction = r.get('matmul_fraction')
    chunks = (r.get('config') or {}).get('vmap_size')
    impl = f"{r['impl']} (vmap_size {chunks})" if r['impl'] == 'jmeta' and chunks else r['impl']
    lines.append(
        f"| {r['case']} | {impl} | {r['median_ms']:.1f} | {_fmt(r['compile_s'], '.1f')} | "
        f"{r['tasks_per_s']:.1f} | {r['peak_mb']:.0f} | {_fmt(r.get('gflops_per_s'), '.1f')} | "
        f"{_fmt(None if fraction is None else 100 * fraction, '.0f')} | {_fmt(speedup, '.2f')}x |")
  return '\n'.join(lines)


def run(case_names: Sequence[str], impls: Sequence[str] | None = None, *, is_quick: bool = False,
        steps: int | None = None, malloc: str = 'tuned', flops: bool = True, vmap_size: int | None = None,
        log=print) -> list[dict[str, Any]]:
  """Measures every (case, implementation) pair; returns the records, each with the machine's description.

  Pairs run one at a time, each in its own process; with `is_quick` (a check of the harness, not a measurement)
  two run at once, each confined to its own share of the CPUs, so a quick run's times check the harness and are
  not the machine's measurements. `vmap_size` sets every case's `Case.vmap_size`."""
  import concurrent.futures
  has_torch = torch_available()
  steps = steps or (5 if is_quick else 20)
  info = machine()
  matmul = matmul_gflops()
  log(f"matmul through XLA: {matmul.get('best', float('nan')):.0f} GFLOP/s (float32, best of 1024 and 2048)")
  jobs = []
  for name in case_names:
    case = quick(CASES[name]) if is_quick else CASES[name]
    if vmap_size is not None:
      case = dataclasses.replace(case, vmap_size=vmap_size)
    chosen = [i for i in impls_of(case, has_torch) if impls is None or i in impls]
    jobs += [(case, impl, flops and i == 0) for i, impl in enumerate(chosen)]
  records, case_flops = [], {}
  workers = 2 if is_quick and len(os.sched_getaffinity(0)) >= 2 else 1
  shares = queue.Queue()
  for i in range(workers):
    shares.put(set(sorted(os.sched_getaffinity(0))[i::workers]) if workers > 1 else None)

  def measure_job(job):
    cpus = shares.get()
    try:
      return measure(job[0], job[1], steps, malloc, job[2], cpus)
    finally:
      shares.put(cpus)

  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for (case, impl, _), r in zip(jobs, pool.map(measure_job, jobs)):
      case_flops[case.name] = r.get('model_flops', case_flops.get(case.name))
      if 'median_ms' in r:
        r['model_flops'] = case_flops[case.name]
        if r['model_flops']:
          r['gflops_per_s'] = r['model_flops'] / (r['median_ms'] / 1e3) / 1e9
          r['matmul_fraction'] = r['gflops_per_s'] / matmul['best'] if matmul.get('best') else None
      r.update(quick=is_quick, machine=info, matmul_gflops=matmul)
      records.append(r)
      log(r.get('error') and f"{case.name} {impl}: error: {r['error']}" or
          f"{case.name} {impl}: {r['median_ms']:.1f} ms per meta-step")
  if not has_torch:
    log("PyTorch is not installed: only jmeta's implementations ran (pip install 'jmeta[bench]' adds them)")
  return records


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='jmeta bench', description=__doc__.splitlines()[0])
  add_arguments(parser)
  return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--case', nargs='+', choices=sorted(CASES), default=list(CASES), metavar='NAME',
                      help=f'cases to run (default: all): {", ".join(CASES)}')
  parser.add_argument('--impl', nargs='+', metavar='IMPL', help='implementations to run (default: all available): '
                      'jmeta, jmeta_loop, torch_loop, torch_func')
  parser.add_argument('--quick', action='store_true', help='small shapes, 5 steps, two pairs at once: checks the '
                      'harness (its times are not measurements)')
  parser.add_argument('--steps', type=int, help='timed meta-steps after warm-up (default 20; 5 with --quick)')
  parser.add_argument('--malloc', choices=MALLOC, default='tuned', help="glibc malloc: 'tuned' (jmeta's default, "
                      "see jmeta.runtime) or 'default'; applies to every implementation alike")
  parser.add_argument('--vmap-size', type=int, help="tasks the 'jmeta' step vmaps at once, mapping over chunks "
                      "of this many (default: the case's own: 8 for maml2_omniglot_5w5s, else the whole meta-batch)")
  parser.add_argument('--json', help='write the records to this file (a JSON list)')


def bench(args: argparse.Namespace, log=print) -> list[dict[str, Any]]:
  """Runs `jmeta bench` from parsed arguments; writes `--json`, prints the table last."""
  from jmeta.checks import check_positive_int
  for name in ('steps', 'vmap_size'):
    if getattr(args, name) is not None:
      check_positive_int(getattr(args, name), f"--{name.replace('_', '-')}")
  records = run(args.case, args.impl, is_quick=args.quick, steps=args.steps, malloc=args.malloc,
                vmap_size=args.vmap_size, log=log)
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, 'w') as f:
      json.dump(records, f, indent=1)
  if args.quick:
    log('--quick: small shapes, two processes at a time, each on its own core; these times check the harness '
        'and are not measurements (run without --quick for those)')
  log(table(records))
  return records


def main(argv: Sequence[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else list(argv)
  if argv[:1] == ['--child']:
    print(json.dumps(_run_child(json.loads(argv[1]))), flush=True)
    return
  bench(_parser().parse_args(argv))


if __name__ == '__main__':
  main()
