"""Sinusoid regression after 0..10 inner steps for MAML, first-order MAML, Meta-SGD, Reptile and the pretrained
baseline at K = 5, 10 and 20 (Finn et al., 2017, figure 2; Li et al., 2017, table 1).

Writes `benchmarks/results/sinusoid.json` (per algorithm and K: the published training budget, wall-clock,
meta-test MSE with 95% intervals after each number of inner steps) and `sinusoid.png` (MSE against steps).

    python benchmarks/sinusoid.py                 # the full benchmark, published budgets
    python benchmarks/sinusoid.py --steps 500     # a quick look
    python benchmarks/sinusoid.py --table         # the README's table, from results/sinusoid.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from jmeta import experiments
from jmeta.evaluation import evaluator, summarize
from jmeta.training import fit

# The learners that adapt by inner steps, whose curves these are; neural processes' sinusoid figures are in
# benchmarks/neural_processes.py.
ALGOS = tuple(name for name, a in experiments.algorithms().items()
              if 'sinusoid' in a.published and any(o.name == 'inner_steps' for o in a.options))
SHOTS = (5, 10, 20)
# MSE after one inner step at K = 5, 10, 20, where the registry has the paper's figure (Li et al., 2017, table 1).
PUBLISHED = {a.name: {p.setting['shots']: p.value for p in a.results if p.dataset == 'sinusoid'}
             for a in experiments.algorithms().values()}
HERE = os.path.dirname(os.path.abspath(__file__))


def run(algo: str, shots: int, *, steps: int | None, episodes: int, max_inner_steps: int, seed: int) -> dict:
  experiment = experiments.build(experiments.Config(algo, 'sinusoid', shots=shots, steps=steps, seed=seed))
  c = experiment.config
  state = experiments.initial_state(experiment)
  # Each algorithm has its own fields (Meta-SGD learns its inner rates, so has no inner_lr): record them all.
  record = {'algo': algo, 'shots': shots, 'meta_steps': c.steps, 'config': c.to_json(),
            'published_1step': PUBLISHED.get(algo, {}).get(shots),
            'command': f'jmeta train --algo {algo} --dataset sinusoid --shots {shots} --seed {seed} --out DIR'}
  t0 = time.perf_counter()
  try:
    state = fit(experiment.learner, experiment.outer_opt, experiment.train_tasks, state, meta_batch=c.meta_batch,
                steps=c.steps, log_every=min(1000, c.steps), progress=False)
  except FloatingPointError as e:
    return {**record, 'diverged': str(e), 'curve': []}
  jax.block_until_ready(state)
  train_s = time.perf_counter() - t0
  counts = range(max_inner_steps + 1)
  scores = evaluator(experiment.learner, experiment.test_tasks, experiment.score, steps=counts)
  table = scores(state.params, experiments.test_key(seed), episodes)
  curve = []
  for column, inner_steps in enumerate(counts):
    values = table[:, column]
    finite = np.isfinite(values) & (values < 1e6)
    point = {'inner_steps': inner_steps, 'mse': None, 'ci95': None, 'diverged_tasks': int((~finite).sum())}
    if finite.all():
      s = summarize(values)
      point.update(mse=s.mean, ci95=s.ci95)
    curve.append(point)
  return {**record, 'train_seconds': round(train_s, 1), 'episodes': episodes, 'eval_queries': c.eval_queries,
          'curve': curve}


def plot(results: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  shots = sorted({r['shots'] for r in results})
  fig, axes = plt.subplots(1, len(shots), figsize=(5 * len(shots), 4), squeeze=False)
  for ax, k in zip(axes[0], shots):
    for r in (r for r in results if r['shots'] == k and r['curve']):
      points = [p for p in r['curve'] if p['mse'] is not None]
      steps = [p['inner_steps'] for p in points]
      mse = np.array([p['mse'] for p in points])
      half = np.array([p['ci95'] for p in points])
      ax.plot(steps, mse, marker='o', ms=3, label=r['algo'])
      ax.fill_between(steps, mse - half, mse + half, alpha=0.2)
    ax.set(title=f'K = {k}', xlabel='inner gradient steps at meta-test', ylabel='MSE (95% CI)', yscale='log')
    ax.text(0.98, 0.02, 'a curve stops where some test task diverged', transform=ax.transAxes, ha='right',
            fontsize=7, color='gray')
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def table(report: dict) -> str:
  """The README's markdown table: MSE after one and ten inner steps, ours with 95% intervals, beside Li et al."""
  def cell(point):
    return 'diverged' if point['mse'] is None else f"{point['mse']:.3f} ± {point['ci95']:.3f}"
  rows = {(r['algo'], r['shots']): r for r in report['results'] if r['curve']}
  shots = sorted({k for _, k in rows})
  head = ' | '.join(f'K = {k}' for k in shots)
  lines = [f'| algorithm | inner steps | published (K = {", ".join(map(str, shots))}) | {head} | training s (K = '
           f'{", ".join(map(str, shots))}) |', '|---' * (4 + len(shots)) + '|']
  for algo in ALGOS:
    runs = [rows.get((algo, k)) for k in shots]
    if not any(runs):
      continue
    published = PUBLISHED.get(algo)
    pub = ' / '.join(f'{published[k]:.2f}' for k in shots) if published else '-'
    seconds = ' / '.join(f"{r['train_seconds']:.0f}" if r else '-' for r in runs)
    for steps in (1, 10):
      cells = ' | '.join(cell(r['curve'][steps]) if r and len(r['curve']) > steps else '-' for r in runs)
      lines.append(f'| {algo} | {steps} | {pub if steps == 1 else ""} | {cells} | {seconds if steps == 1 else ""} |')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--algos', nargs='+', default=ALGOS, choices=ALGOS)
  parser.add_argument('--shots', nargs='+', type=int, default=SHOTS)
  parser.add_argument('--steps', type=int, help='meta-steps for every algorithm (default: each published budget)')
  parser.add_argument('--episodes', type=int, default=1000, help='meta-test tasks per point (default 1000)')
  parser.add_argument('--max-inner-steps', type=int, default=10)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', default=os.path.join(HERE, 'results'))
  parser.add_argument('--table', action='store_true', help='print the markdown table of the results in --out')
  args = parser.parse_args()
  if args.table:
    with open(os.path.join(args.out, 'sinusoid.json')) as f:
      print(table(json.load(f)))
    return

  os.makedirs(args.out, exist_ok=True)
  t0 = time.perf_counter()
  results = []
  for shots in args.shots:
    for algo in args.algos:
      r = run(algo, shots, steps=args.steps, episodes=args.episodes, max_inner_steps=args.max_inner_steps,
              seed=args.seed)
      if 'diverged' in r:
        print(f'{algo:>10} K={shots:<2} {r["diverged"]}', flush=True)
      else:
        one = r['curve'][min(1, args.max_inner_steps)]
        shown = 'diverged' if one['mse'] is None else f'{one["mse"]:.3f} ± {one["ci95"]:.3f}'
        print(f'{algo:>10} K={shots:<2} {r["meta_steps"]:>6} steps {r["train_seconds"]:>6.1f}s  '
              f'MSE@1 {shown}  (published {r["published_1step"]})', flush=True)
      results.append(r)
  report = {'benchmark': 'sinusoid', 'total_seconds': round(time.perf_counter() - t0, 1),
            'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(), 'backend': jax.default_backend(),
                        'jax': jax.__version__},
            'command': 'python benchmarks/sinusoid.py' + (f' --steps {args.steps}' if args.steps else ''),
            'results': results}
  with open(os.path.join(args.out, 'sinusoid.json'), 'w') as f:
    json.dump(report, f, indent=1)
  plot(results, os.path.join(args.out, 'sinusoid.png'))
  print(f'total {report["total_seconds"]}s; wrote {args.out}/sinusoid.json and sinusoid.png')


if __name__ == '__main__':
  main()
