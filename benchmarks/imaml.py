"""iMAML (Rajeswaran et al., 2019, arXiv:1909.04630): memory of one meta-gradient against MAML, and Omniglot.

Memory (`--memory`): the peak memory of one task's meta-gradient (5-way 1-shot Omniglot, 15 queries per class, the
conv4 of the papers at 28x28) after 5, 16 and 50 inner SGD steps, for iMAML (5 CG steps), MAML (`jax.grad` through
the scanned inner loop) and MAML with `remat=True` (`jax.checkpoint` per inner step). Two measures, both recorded:
- `xla_mb`: XLA's account of the compiled meta-gradient, `memory_analysis()`'s temp + argument + output bytes;
- `rss_mb`: the peak resident memory (`ru_maxrss`) of a fresh subprocess that compiles and runs that one case,
  and `rss_base_mb`, its resident memory before compiling (Python, JAX, the inputs), so `rss_mb - rss_base_mb` is
  what compiling and running added.

Omniglot (`--omniglot`): `jmeta train --algo imaml --dataset omniglot --ways 5 --shots 1` with the paper's
defaults for a wall-clock budget (`--minutes`), then 1,000 test episodes with a 95% interval, beside Table 2.

Both merge rows into `benchmarks/results/imaml.json` and redraw `imaml.png`; each records the matmul rate
(GFLOP/s) before and after.

    python benchmarks/imaml.py --memory                       # 9 cases, a subprocess each
    python benchmarks/imaml.py --omniglot --minutes 60        # the 5-way 1-shot reproduction
    python benchmarks/imaml.py --table                        # README tables from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from report import matmul_rate, merge as merge_report, run_train  # benchmarks/report.py, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ('imaml', 'maml', 'maml-remat')
INNER_STEPS = (5, 16, 50)
# Rajeswaran et al. (2019), Table 2, 5-way 1-shot Omniglot: iMAML with gradient descent / Hessian-free inner solver.
PAPER_5W1S = {'GD': 99.16, 'HF': 99.50}


def memory_case(method: str, steps: int, quick: bool) -> dict:
  """Compiles and runs one task's meta-gradient in this process; XLA's memory account and the process's RSS."""
  import jax
  import jax.numpy as jnp
  import jmeta
  from jmeta import losses
  from jmeta.bench.timing import peak_rss_mb, rss_mb
  from jmeta.models.conv4 import Classifier, conv4_maml, functional
  ways, shots, queries = 5, 1, 15
  filters, size, blocks = (8, 14, 1) if quick else (64, 28, 4)
  model = functional(Classifier(conv4_maml(filters, blocks), ways))
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  support = jmeta.Split(jax.random.uniform(keys[0], (ways * shots, size, size, 1)), jnp.arange(ways * shots) % ways)
  query = jmeta.Split(jax.random.uniform(keys[1], (ways * queries, size, size, 1)), jnp.arange(ways * queries) % ways)
  task = jmeta.Task(support, query)
  params = model.init(keys[2], support.x)  # `functional` jits its init already: one program
  if method == 'imaml':
    learner = jmeta.imaml(model.apply, 0.1, steps, lam=2.0, cg_steps=5, cg_damping=1.0, loss_fn=losses.cross_entropy)
  else:
    learner = jmeta.maml(model.apply, 0.1, steps, remat=method == 'maml-remat', loss_fn=losses.cross_entropy)
  base = rss_mb()
  compiled = jax.jit(learner.meta_grad).lower(params, task).compile()
  analysis = compiled.memory_analysis()
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(params, task))
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(params, task))
  second = time.perf_counter() - t0
  xla = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
  return {'method': method, 'inner_steps': steps, 'xla_mb': xla / 2**20,
          'xla_temp_mb': analysis.temp_size_in_bytes / 2**20, 'rss_base_mb': base,
          'rss_mb': peak_rss_mb(), 'first_run_s': round(first, 3),
          'run_s': round(second, 4), 'filters': filters, 'blocks': blocks, 'image_size': size}


def run_memory(args: argparse.Namespace) -> list[dict]:
  steps = (2,) if args.quick else INNER_STEPS
  rows = []
  for method in METHODS:
    for s in steps:
      done = subprocess.run([sys.executable, os.path.abspath(__file__), '--memory-case', method, str(s)] +
                            (['--quick'] if args.quick else []), capture_output=True, text=True)
      if done.returncode != 0:
        raise RuntimeError(f'{method} at {s} steps failed: {done.stderr.strip()[-2000:]}')
      r = json.loads(done.stdout.strip().splitlines()[-1])
      print(f"{method} {s} steps: XLA {r['xla_mb']:.1f} MB, peak RSS {r['rss_mb']:.0f} MB "
            f"(base {r['rss_base_mb']:.0f})", flush=True)
      rows.append({'row': f'memory-{method}-{s}', **r})
  return rows


def omniglot_command(out: str, minutes: float, quick: bool, no_pull_back: bool = False) -> list[str]:
  cmd = ['jmeta', 'train', '--algo', 'imaml', '--dataset', 'omniglot', '--ways', '5', '--shots', '1']
  cmd += ['--no-pull-back'] if no_pull_back else []
  if quick:
    cmd += ['--filters', '8', '--blocks', '2', '--steps', '4', '--log-every', '2', '--valid-episodes', '0',
            '--eval-episodes', '20', '--meta-batch', '2', '--inner-steps', '2', '--eval-inner-steps', '2']
  else:
    cmd += ['--eval-every', '500', '--valid-episodes', '100']
  return cmd + ['--time-limit', f'{minutes:g}', '--no-progress', '--out', out]


def run_omniglot(args: argparse.Namespace) -> dict:
  out = os.path.join(args.runs, 'imaml-5w1s')
  cmd = omniglot_command(out, args.minutes, args.quick, args.no_pull_back)
  run = run_train(cmd, out, args.resume, quick=args.quick)
  import jax
  backend = jax.default_backend()
  row = {'row': 'omniglot-5w1s' + ('' if backend == 'cpu' else f'-{backend}') + (f'-{args.tag}' if args.tag else ''),
         'backend': backend,
         'device': str(jax.devices()[0].device_kind), 'command': ' '.join(cmd), 'paper': PAPER_5W1S,
         'budget_minutes': args.minutes, **run.facts}
  if run.result is None:
    return row
  result, records, config = run.result, run.records, run.config
  curve = [{'step': r['step'], 'elapsed_s': r['elapsed_s'], 'train_accuracy': r.get('accuracy'),
            'valid_accuracy': r.get('valid_accuracy')} for r in records if 'step' in r]
  return {**row, 'accuracy': result['accuracy'], 'ci95': result['ci95'], 'episodes': result['episodes'],
          'meta_steps': records[-1]['step'], 'train_seconds': records[-1]['elapsed_s'], 'curve': curve,
          'config': config}


def plot(report: dict, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  mem = [r for r in report['results'] if r['row'].startswith('memory-')]
  for method, color in zip(METHODS, ('C0', 'C1', 'C2')):
    rows = sorted((r for r in mem if r['method'] == method), key=lambda r: r['inner_steps'])
    if rows:
      xs = [r['inner_steps'] for r in rows]
      left.plot(xs, [r['xla_mb'] for r in rows], 'o-', color=color, label=f'{method}, XLA temp+args+outputs')
      left.plot(xs, [r['rss_mb'] - r['rss_base_mb'] for r in rows], 's--', color=color,
                label=f'{method}, peak RSS above base')
  left.set(xlabel='inner steps', ylabel='MB', title='one meta-gradient, 5-way 1-shot Omniglot conv4')
  for r in report['results']:
    if r['row'].startswith('omniglot-5w1s') and 'curve' in r:
      where = f"{r.get('device', 'cpu')}, lam_damping {r.get('config', {}).get('lam_damping') or 0:g}"
      train = [p for p in r['curve'] if p['train_accuracy'] is not None]
      valid = [p for p in r['curve'] if p['valid_accuracy'] is not None]
      line, = right.plot([p['step'] for p in train], [100 * p['train_accuracy'] for p in train], alpha=0.5,
                         label=f'{where}: training tasks (query accuracy)')
      right.plot([p['step'] for p in valid], [100 * p['valid_accuracy'] for p in valid], 'o-',
                 color=line.get_color(), label=f'{where}: validation episodes')
      if 'accuracy' in r:
        right.errorbar([r['meta_steps']], [100 * r['accuracy']], yerr=[100 * r['ci95']], fmt='s', color='k',
                       label=f'{where}: test, 95% CI')
  right.axhline(PAPER_5W1S['GD'], ls='--', color='gray', label='paper, iMAML-GD')
  right.set(xlabel='meta-steps', ylabel='accuracy (%)', title='iMAML, 5-way 1-shot Omniglot')
  for ax in (left, right):
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def table(report: dict) -> str:
  lines = ['| method | inner steps | XLA temp+args+outputs MB | peak RSS MB (base) | one run s |',
           '|---|---|---|---|---|']
  mem = sorted((r for r in report['results'] if r['row'].startswith('memory-')),
               key=lambda r: (METHODS.index(r['method']), r['inner_steps']))
  for r in mem:
    lines.append(f"| {r['method']} | {r['inner_steps']} | {r['xla_mb']:.1f} | {r['rss_mb']:.0f} "
                 f"({r['rss_base_mb']:.0f}) | {r['run_s']:.3f} |")
  runs = [r for r in report['results'] if r['row'].startswith('omniglot-5w1s')]
  if runs:
    lines += ['', '| ways | shots | paper GD / HF % | ours % (95% CI) | inner loop | lam_damping | meta-steps | '
              'training min | device | matmul GFLOP/s before / after | command |',
              '|---|---|---|---|---|---|---|---|---|---|---|']
  for r in runs:
    ours = r.get('error') or f"{100 * r['accuracy']:.1f} ± {100 * r['ci95']:.1f}"
    minutes = f"{r['train_seconds'] / 60:.0f}" if 'train_seconds' in r else '-'
    damping = r.get('config', {}).get('lam_damping') or 0
    inner = 'pull-back' if r.get('config', {}).get('pull_back') else 'regularised'
    lines.append(f"| 5 | 1 | {PAPER_5W1S['GD']} / {PAPER_5W1S['HF']} | {ours} | {inner} | {damping:g} | "
                 f"{r.get('meta_steps', '-')} | "
                 f"{minutes} | {r.get('device', 'cpu')} | {r['matmul_gflops_before']:.0f} / "
                 f"{r['matmul_gflops_after']:.0f} | `{r['command'].split(' --out ')[0]} --out DIR` |")
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--memory', action='store_true', help='peak memory at 5, 16, 50 inner steps')
  parser.add_argument('--omniglot', action='store_true', help='train and test 5-way 1-shot for --minutes')
  parser.add_argument('--minutes', type=float, default=60.0, help='training budget (default 60)')
  parser.add_argument('--resume', action='store_true', help='continue the Omniglot run in --runs')
  parser.add_argument('--quick', action='store_true', help='tiny models and budgets: checks the harness only')
  parser.add_argument('--runs', default=os.path.join(os.path.expanduser('~'), '.cache', 'jmeta', 'runs'))
  parser.add_argument('--out', default=os.path.join(HERE, 'results'))
  parser.add_argument('--table', action='store_true', help='print the markdown tables of the results in --out')
  parser.add_argument('--no-pull-back', action='store_true',
                      help='regularise every inner step instead of the published pull-back step')
  parser.add_argument('--tag', help="appended to the Omniglot row's name, to keep an earlier run's row")
  parser.add_argument('--merge-from', help="merge the rows of another run's imaml.json (e.g. from a GPU) into --out")
  parser.add_argument('--memory-case', nargs=2, metavar=('METHOD', 'STEPS'), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.memory_case:
    print(json.dumps(memory_case(args.memory_case[0], int(args.memory_case[1]), args.quick)))
    return
  path = os.path.join(args.out, 'imaml.json')
  if args.table:
    with open(path) as f:
      print(table(json.load(f)))
    return
  if args.merge_from:
    with open(args.merge_from) as f:
      other = json.load(f)
    with open(path if os.path.exists(path) else args.merge_from) as f:
      header = {k: v for k, v in json.load(f).items() if k != 'results'}
    report = merge_report(path, other['results'], header, lambda r: (r['row'].startswith('memory-'), r['row']))
    plot(report, os.path.join(args.out, 'imaml.png'))
    print(table(report))
    return
  if not (args.memory or args.omniglot):
    parser.error('choose --memory, --omniglot, --merge-from or --table')
  os.makedirs(args.out, exist_ok=True)
  import jax
  header = {'benchmark': 'imaml', 'quick': args.quick,
            'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(), 'backend': jax.default_backend(),
                        'jax': jax.__version__}}
  order = lambda r: (r['row'].startswith('memory-'), r['row'])
  report = None
  if args.memory:
    before = matmul_rate(args.quick)
    rows = run_memory(args)
    after = matmul_rate(args.quick)
    rows = [{**r, 'matmul_gflops_before': before, 'matmul_gflops_after': after} for r in rows]
    report = merge_report(path, rows, header, order)
  if args.omniglot:
    r = run_omniglot(args)
    report = merge_report(path, [r], header, order)
    print(r.get('error') or f"5-way 1-shot: {100 * r['accuracy']:.2f}% ± {100 * r['ci95']:.2f} after "
          f"{r['meta_steps']} steps ({r['train_seconds']:.0f} s)", flush=True)
  plot(report, os.path.join(args.out, 'imaml.png'))
  print(table(report))


if __name__ == '__main__':
  main()
