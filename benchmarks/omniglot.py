"""Few-shot classification on Omniglot: each algorithm trained within a wall-clock budget with the committed
command, evaluated on 1,000 test episodes, beside the published figure.

Each row runs `jmeta train ... --time-limit MINUTES` in a subprocess (the exact command is recorded) and merges
its record into `benchmarks/results/omniglot.json` by row name: the published accuracy, ours with its 95%
interval, the command and resolved configuration, the meta-steps reached, the wall-clock time and the CPU cores
the run had. Run directories (checkpoints) go to `--runs`, outside the results. Two invocations pinned to
different cores (`taskset -c 0 ...`, `taskset -c 1 ...`) run rows side by side.

    python benchmarks/omniglot.py --rows protonet-5w1s maml-5w1s     # selected rows, 60 minutes each
    python benchmarks/omniglot.py --table                            # the README table from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from jmeta import experiments

from report import merge as merge_report, run_train  # benchmarks/report.py, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))

# Published 5-way Omniglot test accuracy (%), from the registry, where each algorithm cites its paper and table:
# Finn et al. (2017), Nichol et al. (2018, transductive), Li et al. (2017), Snell et al. (2017), Vinyals et al.
# (2016, also for Koch et al.'s Siamese network) and Sung et al. (2018). ANIL reports no 5-way Omniglot figure.
PUBLISHED = {(a.name, p.setting['shots']): p.value for a in experiments.algorithms().values() for p in a.results
             if p.dataset == 'omniglot' and p.setting.get('ways') == 5}
ALGOS = tuple(name for name, a in experiments.algorithms().items() if 'omniglot' in a.published and
              a.family not in ('baseline', 'generative'))  # MetaGAN stands beside its base in metagan.py
ROWS = {f'{a}-5w{k}s': (a, 5, k) for a in ALGOS for k in (1, 5)}


def command(algo: str, ways: int, shots: int, out: str, minutes: float, quick: bool) -> list[str]:
  cmd = ['jmeta', 'train', '--algo', algo, '--dataset', 'omniglot', '--ways', str(ways), '--shots', str(shots),
         '--time-limit', f'{minutes:g}', '--no-progress', '--out', out]
  if quick:
    cmd += ['--filters', '8', '--blocks', '1', '--train-ways', str(ways), '--steps', '10', '--log-every', '5',
            '--valid-episodes', '0', '--eval-episodes', '40', '--meta-batch', '2']
  return cmd


def run_row(name: str, args: argparse.Namespace) -> dict:
  algo, ways, shots = ROWS[name]
  out = os.path.join(args.runs, name)
  cmd = command(algo, ways, shots, out, args.minutes, args.quick)
  run = run_train(cmd, out, args.resume, quick=args.quick)
  row = {'row': name, 'algo': algo, 'ways': ways, 'shots': shots, 'command': ' '.join(cmd),
         'published': PUBLISHED.get((algo, shots)), 'budget_minutes': args.minutes, **run.facts}
  if run.result is None:
    return row
  result, last = run.result, run.records[-1]
  return {**row, 'accuracy': result['accuracy'], 'ci95': result['ci95'], 'episodes': result['episodes'],
          'meta_steps': last['step'], 'train_seconds': last['elapsed_s'], 'config': run.config}


def merge(path: str, rows: list[dict], header: dict) -> dict:
  """Replaces `rows` (by row name) in the report at `path`, in the order of `ROWS`, and returns the report."""
  order = {name: i for i, name in enumerate(sorted(ROWS))}
  return merge_report(path, rows, header, lambda r: order.get(r['row'], len(order)))


def table(report: dict) -> str:
  lines = ['| algorithm | ways | shots | published % | ours % (95% CI) | meta-steps | training min | command |',
           '|---|---|---|---|---|---|---|---|']
  rows = sorted(report['results'], key=lambda r: (r['ways'], r['shots'], ALGOS.index(r['algo'])))
  for r in rows:
    ours = r.get('error') or f"{100 * r['accuracy']:.1f} ± {100 * r['ci95']:.1f}"
    minutes = f"{r['train_seconds'] / 60:.0f}" if 'train_seconds' in r else '-'
    if r.get('cores') == 1:
      minutes += ' (1 core)'
    command = r['command'].split(' --out ')[0] + ' --out DIR'
    lines.append(f"| {r['algo']} | {r['ways']} | {r['shots']} | {r['published'] or '-'} | {ours} | "
                 f"{r.get('meta_steps', '-')} | {minutes} | `{command}` |")
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rows', nargs='+', default=sorted(ROWS), choices=sorted(ROWS))
  parser.add_argument('--minutes', type=float, default=60.0, help='training budget of each row (default 60)')
  parser.add_argument('--resume', action='store_true', help='continue each row\'s run in --runs')
  parser.add_argument('--quick', action='store_true', help='tiny models and budgets: checks the harness only')
  parser.add_argument('--runs', default=os.path.join(os.path.expanduser('~'), '.cache', 'jmeta', 'runs'))
  parser.add_argument('--out', default=os.path.join(HERE, 'results'))
  parser.add_argument('--table', action='store_true', help='print the markdown table of the results in --out')
  args = parser.parse_args()
  path = os.path.join(args.out, 'omniglot.json')
  if args.table:
    with open(path) as f:
      print(table(json.load(f)))
    return
  os.makedirs(args.out, exist_ok=True)
  import jax
  header = {'benchmark': 'omniglot', 'quick': args.quick,
            'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(), 'backend': jax.default_backend(),
                        'jax': jax.__version__}}
  for name in args.rows:
    r = run_row(name, args)
    report = merge(path, [r], header)
    print(r.get('error') or f"{name}: {100 * r['accuracy']:.2f}% ± {100 * r['ci95']:.2f} after {r['meta_steps']} "
          f"steps ({r['train_seconds']:.0f} s); published {r['published']}", flush=True)
  print(table(report))


if __name__ == '__main__':
  main()
