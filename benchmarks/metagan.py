"""MetaGAN on Omniglot beside its base learner trained with the same budget: the gain, measured side by side.

Each row is a pair: `jmeta train --algo BASE` and `jmeta train --algo metagan-BASE` with the same settings and
the same `--time-limit MINUTES`, run one after the other in subprocesses (the exact commands are recorded), each
evaluated on the test classes; both records are merged into `benchmarks/results/metagan.json` under the row's
name, with the difference of the accuracies and whether it is outside the combined 95% interval. The paper's
figures (Zhang et al., 2018, table 1: Relation Networks + MetaGAN 99.67 / 99.86 at 5-way 1 / 5 shots) stand
beside ours; they come from the full training budget, not ours.

    python benchmarks/metagan.py --rows protonet-5w1s --minutes 10    # one pair, 10 minutes each
    python benchmarks/metagan.py --table                               # the README table from the JSON
    python benchmarks/metagan.py --plot                                # redraw metagan.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform

from report import matmul_rate, merge as merge_report, run_train  # benchmarks/report.py, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
BASES = ('protonet', 'relation', 'maml')
ROWS = {f'{b}-{w}w{k}s': (b, w, k) for b in BASES for w in (5, 20) for k in (1, 5)}
# Zhang et al. (2018), table 1 (Omniglot, the paper's full budget), where it reports the pair.
PAPER = {('relation', 5, 1): 99.67, ('relation', 5, 5): 99.86}


def command(algo: str, ways: int, shots: int, out: str, minutes: float, quick: bool, extra=()) -> list[str]:
  cmd = ['jmeta', 'train', '--algo', algo, '--dataset', 'omniglot', '--ways', str(ways), '--shots', str(shots),
         '--time-limit', f'{minutes:g}', '--no-progress', '--valid-episodes', '0', *extra]
  if quick:
    cmd += ['--filters', '8', '--blocks', '2', '--steps', '4', '--log-every', '2', '--eval-episodes', '20',
            '--meta-batch', '2']
  return cmd + ['--out', out]


def run_row(name: str, args: argparse.Namespace) -> dict:
  base, ways, shots = ROWS[name]
  row = {'row': name, 'learner': base, 'ways': ways, 'shots': shots, 'budget_minutes': args.minutes,
         'paper_metagan': PAPER.get((base, ways, shots))}
  for algo in (base, f'metagan-{base}'):
    out = os.path.join(args.runs, f'{name}-{algo}')
    cmd = command(algo, ways, shots, out, args.minutes, args.quick, args.extra)
    run = run_train(cmd, out, args.resume)
    side = {'command': ' '.join(cmd), **run.facts}
    if run.result is not None:
      last = run.records[-1]
      side.update(accuracy=run.result['accuracy'], ci95=run.result['ci95'], episodes=run.result['episodes'],
                  meta_steps=last['step'], train_seconds=last['elapsed_s'], config=run.config,
                  final_metrics={k: v for k, v in last.items() if k not in ('step', 'elapsed_s')})
    row['metagan' if algo != base else 'base'] = side  # the base learner's run alone, and with MetaGAN
  if 'accuracy' in row['base'] and 'accuracy' in row['metagan']:
    gain = row['metagan']['accuracy'] - row['base']['accuracy']
    interval = math.hypot(row['base']['ci95'], row['metagan']['ci95'])
    row.update(gain=gain, gain_ci95=interval, gain_outside_ci=abs(gain) > interval)
  return row


def table(report: dict) -> str:
  lines = ['| base | ways | shots | base % (95% CI) | + MetaGAN % (95% CI) | gain | outside the CI? | meta-steps '
           '(base / MetaGAN) | minutes each | paper, + MetaGAN % |', '|---|---|---|---|---|---|---|---|---|---|']
  for r in report['results']:
    acc = lambda s: s.get('error') or f"{100 * s['accuracy']:.1f} ± {100 * s['ci95']:.1f}"
    gain = f"{100 * r['gain']:+.1f} ± {100 * r['gain_ci95']:.1f}" if 'gain' in r else '-'
    outside = ('yes' if r['gain_outside_ci'] else 'no') if 'gain' in r else '-'
    lines.append(f"| {r['learner']} | {r['ways']} | {r['shots']} | {acc(r['base'])} | {acc(r['metagan'])} | {gain} | "
                 f"{outside} | {r['base'].get('meta_steps', '-')} / {r['metagan'].get('meta_steps', '-')} | "
                 f"{r['budget_minutes']:g} | {r['paper_metagan'] or '-'} |")
  return '\n'.join(lines)


def plot(report: dict, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  rows = [r for r in report['results'] if 'gain' in r]
  fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(rows)), 3.5))
  for i, r in enumerate(rows):
    for j, side in enumerate(('base', 'metagan')):
      s = r[side]
      ax.bar(i + 0.38 * (j - 0.5), 100 * s['accuracy'], 0.36, yerr=100 * s['ci95'], capsize=3,
             color=('tab:gray', 'tab:purple')[j], label=('base learner', '+ MetaGAN')[j] if i == 0 else None)
  ax.set_xticks(range(len(rows)), [r['row'] for r in rows])
  ax.set_ylabel('test accuracy % (95% CI)')
  ax.set_title(f"Omniglot, same budget each ({rows[0]['budget_minutes']:g} min)" if rows else 'Omniglot')
  ax.legend(loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rows', nargs='+', default=['protonet-5w1s'], choices=sorted(ROWS))
  parser.add_argument('--minutes', type=float, default=30.0, help='training budget of each run (default 30)')
  parser.add_argument('--extra', nargs=argparse.REMAINDER, default=[],
                      help='flags added to both commands of each pair (last on the line)')
  parser.add_argument('--resume', action='store_true', help="continue each run's directory in --runs")
  parser.add_argument('--quick', action='store_true', help='tiny models and budgets: checks the harness only')
  parser.add_argument('--runs', default=os.path.join(os.path.expanduser('~'), '.cache', 'jmeta', 'runs'))
  parser.add_argument('--out', default=os.path.join(HERE, 'results'))
  parser.add_argument('--table', action='store_true', help='print the markdown table of the results in --out')
  parser.add_argument('--plot', action='store_true', help='redraw metagan.png from the results in --out')
  args = parser.parse_args()
  path = os.path.join(args.out, 'metagan.json')
  if args.table or args.plot:
    with open(path) as f:
      report = json.load(f)
    if args.plot:
      plot(report, os.path.join(args.out, 'metagan.png'))
    if args.table:
      print(table(report))
    return
  os.makedirs(args.out, exist_ok=True)
  import jax
  header = {'benchmark': 'metagan', 'quick': args.quick,
            'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(), 'backend': jax.default_backend(),
                        'jax': jax.__version__, 'matmul_gflops_at_start': matmul_rate()}}
  order = {name: i for i, name in enumerate(ROWS)}
  for name in args.rows:
    r = run_row(name, args)
    report = merge_report(path, [r], header, lambda r: order.get(r['row'], len(order)))
    print(table({'results': [r]}).splitlines()[-1], flush=True)
  plot(report, os.path.join(args.out, 'metagan.png'))
  print(table(report))


if __name__ == '__main__':
  main()
