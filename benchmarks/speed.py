"""Meta-step speed against PyTorch on this machine, and how time and memory scale; JSON, plots, README tables.

    python benchmarks/speed.py                 # every case and implementation -> results/speed.json (+ .png)
    python benchmarks/speed.py --quick         # small shapes: checks the harness
    python benchmarks/speed.py --scaling       # meta-batch 1-128, inner steps 1-25 with and without remat
                                               #   -> results/scaling.json, results/scaling.png
    python benchmarks/speed.py --scaling-chunks  # meta-batch 16-128 vmapped 8 tasks at a time -> into scaling.json
    python benchmarks/speed.py --vmap-sizes    # the MAML cases with tasks vmapped in chunks of 1-32
                                               #   -> results/vmap_sizes.json
    python benchmarks/speed.py --table         # the README tables from the JSON files

The cases and the implementations are `jmeta bench`'s (`jmeta/bench/`): each (case, implementation) pair runs in
a fresh process, timed over 20 meta-steps after a warm-up step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from jmeta.bench import run as bench
from jmeta.bench.cases import CASES

HERE = os.path.dirname(os.path.abspath(__file__))
SCALING_CASE = 'maml2_omniglot_5w1s'
META_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
INNER_STEPS = (1, 5, 10, 25)
VMAP_SIZES = (1, 2, 4, 8, 16, 32)


def vmap_sizes(steps: int, log=print) -> list[dict]:
  """The 'jmeta' step of each MAML case with its meta-batch vmapped in chunks of each of `VMAP_SIZES` tasks
  (`jmeta.meta_step`'s `vmap_size`; 32 is the whole meta-batch)."""
  records = []
  for case in CASES.values():
    if case.kind != 'maml':
      continue
    for size in VMAP_SIZES:
      r = bench.measure(dataclasses.replace(case, vmap_size=size), 'jmeta', steps)
      records.append({'vmap_size': size, **r})
      log(f"{case.name} vmap_size {size}: {r.get('median_ms', float('nan')):.0f} ms, "
          f"XLA {r.get('xla_memory_mb') or 0:.0f} MB, peak RSS {r.get('peak_mb', 0):.0f} MB")
  return records


def vmap_sizes_table(records: list[dict]) -> str:
  lines = ['| case | vmap_size | ms per meta-step | XLA buffers MB | peak RSS MB |', '|---|---|---|---|---|']
  for r in records:
    if 'median_ms' in r:
      lines.append(f"| {r['case']} | {r['vmap_size']} | {r['median_ms']:.0f} | {r['xla_memory_mb']:.0f} | "
                   f"{r['peak_mb']:.0f} |")
  return '\n'.join(lines)


def scaling(steps: int, torch: bool, log=print) -> dict:
  """Time and memory of `SCALING_CASE` against meta-batch size (jmeta and the PyTorch loop), and against inner
  steps with and without `jax.checkpoint` of each inner step (jmeta, meta-batch 32)."""
  base = CASES[SCALING_CASE]
  by_batch, by_steps = [], []
  for mb in META_BATCHES:
    for impl in ('jmeta', 'torch_loop') if torch else ('jmeta',):
      r = bench.measure(dataclasses.replace(base, meta_batch=mb), impl, steps)
      by_batch.append({'meta_batch': mb, **r})
      log(f"meta-batch {mb} {impl}: {r.get('median_ms', float('nan')):.0f} ms, {r.get('peak_mb', 0):.0f} MB")
  for inner in INNER_STEPS:
    for remat in (False, True):
      r = bench.measure(dataclasses.replace(base, inner_steps=inner, remat=remat), 'jmeta', steps)
      by_steps.append({'inner_steps': inner, 'remat': remat, **r})
      log(f"inner steps {inner} remat {remat}: {r.get('median_ms', float('nan')):.0f} ms, "
          f"XLA {r.get('xla_memory_mb') or 0:.0f} MB, peak RSS {r.get('peak_mb', 0):.0f} MB")
  return {'case': SCALING_CASE, 'steps': steps, 'machine': bench.machine(), 'by_meta_batch': by_batch,
          'by_inner_steps': by_steps}


CHUNK = 8


def chunked_scaling(steps: int, log=print) -> list[dict]:
  """`SCALING_CASE`'s 'jmeta' step against meta-batch size (16-128) with `CHUNK` tasks vmapped at a time."""
  records = []
  for mb in (m for m in META_BATCHES if m > CHUNK):
    r = bench.measure(dataclasses.replace(CASES[SCALING_CASE], meta_batch=mb, vmap_size=CHUNK), 'jmeta', steps)
    records.append({'meta_batch': mb, 'vmap_size': CHUNK, **r})
    log(f"meta-batch {mb} jmeta vmap_size {CHUNK}: {r.get('median_ms', float('nan')):.0f} ms, "
        f"XLA {r.get('xla_memory_mb') or 0:.0f} MB, peak RSS {r.get('peak_mb', 0):.0f} MB")
  return records


def plot_scaling(report: dict, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  for impl, marker in (('jmeta', 'o'), ('torch_loop', 's')):
    rs = [r for r in report['by_meta_batch'] if r['impl'] == impl and 'median_ms' in r]
    if rs:
      axes[0].loglog([r['meta_batch'] for r in rs], [r['median_ms'] for r in rs], marker=marker, label=impl)
      axes[1].loglog([r['meta_batch'] for r in rs], [r['peak_mb'] for r in rs], marker=marker,
                     label=f'{impl}, peak RSS')
  rs = [r for r in report['by_meta_batch'] if r['impl'] == 'jmeta' and r.get('xla_memory_mb')]
  axes[1].loglog([r['meta_batch'] for r in rs], [r['xla_memory_mb'] for r in rs], marker='o', ls='--',
                 label="jmeta, XLA's buffers")
  rs = [r for r in report.get('by_meta_batch_chunked', []) if 'median_ms' in r]
  if rs:
    label = f"jmeta, vmap_size {rs[0]['vmap_size']}"
    axes[0].loglog([r['meta_batch'] for r in rs], [r['median_ms'] for r in rs], marker='^', label=label)
    axes[1].loglog([r['meta_batch'] for r in rs], [r['peak_mb'] for r in rs], marker='^', label=f'{label}, peak RSS')
    axes[1].loglog([r['meta_batch'] for r in rs], [r['xla_memory_mb'] for r in rs], marker='^', ls='--',
                   label=f"{label}, XLA's buffers")
  axes[0].set(xlabel='meta-batch (tasks)', ylabel='ms per meta-step', title='time vs meta-batch')
  axes[1].set(xlabel='meta-batch (tasks)', ylabel='MB', title='memory vs meta-batch')
  ms_axis = axes[2].twinx()
  for remat, marker in ((False, 'o'), (True, 's')):
    rs = [r for r in report['by_inner_steps'] if r['remat'] == remat and 'median_ms' in r]
    label = 'remat' if remat else 'no remat'
    axes[2].plot([r['inner_steps'] for r in rs], [r['xla_memory_mb'] for r in rs], marker=marker,
                 label=f"{label}: XLA's buffers (MB)")
    ms_axis.plot([r['inner_steps'] for r in rs], [r['median_ms'] for r in rs], marker=marker, ls=':', color='gray',
                 label=f'{label}: ms per step (right axis)')
  ms_axis.set(ylabel='ms per meta-step (dotted)')
  axes[2].set(xlabel='inner steps', ylabel="MB of XLA's buffers", title='inner steps, meta-batch 32')
  for ax in axes:
    ax.grid(alpha=.3, which='both')
  for ax in axes[:2]:
    ax.legend(fontsize=8, loc='upper left')
  handles = axes[2].get_legend_handles_labels()[0] + ms_axis.get_legend_handles_labels()[0]
  axes[2].legend(handles=handles, fontsize=8, loc='upper left')
  fig.suptitle(f"Second-order MAML, Omniglot 5-way 1-shot conv4 ({report['machine']['cpus']}-core CPU)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def scaling_table(report: dict) -> str:
  lines = ['| inner steps | remat | ms per meta-step | XLA buffers MB | peak RSS MB |', '|---|---|---|---|---|']
  for r in report['by_inner_steps']:
    if 'median_ms' in r:
      lines.append(f"| {r['inner_steps']} | {'yes' if r['remat'] else 'no'} | {r['median_ms']:.0f} | "
                   f"{r['xla_memory_mb']:.0f} | {r['peak_mb']:.0f} |")
  lines += ['', '| meta-batch | impl | ms per meta-step | tasks/s | XLA buffers MB | peak RSS MB |',
            '|---|---|---|---|---|---|']
  for r in report['by_meta_batch'] + report.get('by_meta_batch_chunked', []):
    if 'median_ms' in r:
      xla = '-' if r.get('xla_memory_mb') is None else f"{r['xla_memory_mb']:.0f}"
      impl = f"{r['impl']}, vmap_size {r['vmap_size']}" if r.get('vmap_size') else r['impl']
      lines.append(f"| {r['meta_batch']} | {impl} | {r['median_ms']:.0f} | {r['tasks_per_s']:.0f} | {xla} | "
                   f"{r['peak_mb']:.0f} |")
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--scaling', action='store_true')
  parser.add_argument('--steps', type=int, help='timed steps (default 20; 10 for --scaling; 5 with --quick)')
  parser.add_argument('--scaling-chunks', action='store_true')
  parser.add_argument('--vmap-sizes', action='store_true')
  parser.add_argument('--table', action='store_true')
  parser.add_argument('--out', default=os.path.join(HERE, 'results'))
  args = parser.parse_args()
  speed_path, scaling_path, sizes_path = (os.path.join(args.out, f)
                                          for f in ('speed.json', 'scaling.json', 'vmap_sizes.json'))
  if args.table:
    with open(speed_path) as f:
      print(bench.table(json.load(f)))
    if os.path.exists(scaling_path):
      with open(scaling_path) as f:
        print('\n' + scaling_table(json.load(f)))
    if os.path.exists(sizes_path):
      with open(sizes_path) as f:
        print('\n' + vmap_sizes_table(json.load(f)))
    return
  os.makedirs(args.out, exist_ok=True)
  t0 = time.perf_counter()
  if args.vmap_sizes:
    records = vmap_sizes(args.steps or 10)
    with open(sizes_path, 'w') as f:
      json.dump(records, f, indent=1)
    print(f'{time.perf_counter() - t0:.0f} s in all')
    print(vmap_sizes_table(records))
    return
  if args.scaling_chunks:
    if not os.path.exists(scaling_path):
      parser.error(f'--scaling-chunks adds a series to {scaling_path}, which does not exist: run --scaling first')
    with open(scaling_path) as f:
      report = json.load(f)
    report['by_meta_batch_chunked'] = chunked_scaling(args.steps or 10)
    with open(scaling_path, 'w') as f:
      json.dump(report, f, indent=1)
    plot_scaling(report, os.path.join(args.out, 'scaling.png'))
    print(scaling_table(report))
    return
  if args.scaling:
    report = scaling(args.steps or 10, bench.torch_available())
    report['wall_seconds'] = time.perf_counter() - t0
    with open(scaling_path, 'w') as f:
      json.dump(report, f, indent=1)
    plot_scaling(report, os.path.join(args.out, 'scaling.png'))
    print(scaling_table(report))
    return
  records = bench.run(list(CASES), is_quick=args.quick, steps=args.steps)
  path = speed_path if not args.quick else os.path.join(args.out, 'speed_quick.json')
  with open(path, 'w') as f:
    json.dump(records, f, indent=1)
  print(f'{time.perf_counter() - t0:.0f} s in all')
  print(bench.table(records))


if __name__ == '__main__':
  main()
