"""Learned optimizers against tuned Adam, RMSProp and SGD with momentum, on held-out tasks (issue 12, part 2).

Meta-trains, on the 10-d quadratics of Andrychowicz et al. (2016, arXiv:1606.04474):
- the paper's coordinatewise LSTM (2 x 20, log/sign preprocessing) by truncated backpropagation (unrolls of 100
  steps in truncations of 20, persistent across truncations, the paper's method);
- learned_optimization's per-parameter MLP optimizer by persistent evolution strategies (evosax's PersistentES).
Each baseline's step size is tuned on meta-training tasks (keys of the training stream) by a grid, separately for
100 and 1,000 steps, by the mean log training loss at the last step. Then every optimizer trains held-out tasks of
the training family (quadratics) and of families it never saw (the digits MLP; with --omniglot, conv4 on 5-way
Omniglot episodes at 14x14, 100 steps only), and the script reports the mean training loss along the way.

  python benchmarks/learned_optimizers.py                 # results/learned_optimizers.json and .png
  python benchmarks/learned_optimizers.py --quick         # a smoke run into /tmp/jmeta_learned_optimizers
  python benchmarks/learned_optimizers.py --table         # the README's table from the JSON
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmeta import optimizers as lo

HERE = os.path.dirname(os.path.abspath(__file__))
GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0)
BASELINES = {
    'adam': lambda lr: optax.adam(lr),
    'rmsprop': lambda lr: optax.rmsprop(lr),
    'sgd_momentum': lambda lr: optax.sgd(lr, momentum=0.9),
}
HORIZONS = (100, 1000)


def train_lstm(family, seconds: float, max_steps: int, *, tasks: int, truncation: int, horizon: int, lr: float,
               seed: int) -> tuple[dict, dict]:
  init, step = lo.tbptt(family, lo.lstm_optimizer, optax.adam(lr), tasks=tasks, truncation=truncation,
                        horizon=horizon)
  state = init(jax.random.PRNGKey(seed), lo.init_lstm_meta_params(jax.random.PRNGKey(seed + 1)))
  return _loop(jax.jit(step), state, seconds, max_steps, seed, lambda s: s.meta_params)


def train_mlp_pes(family, seconds: float, max_steps: int, *, population: int, truncation: int, horizon: int,
                  lr: float, std: float, seed: int) -> tuple[dict, dict]:
  meta = lo.init_mlp_meta_params(jax.random.PRNGKey(seed + 1))
  init, step, mean = lo.persistent_es(family, lo.mlp_optimizer, meta, population=population, truncation=truncation,
                                      horizon=horizon, lr=lr, std=std)
  state = init(jax.random.PRNGKey(seed), meta)
  return _loop(jax.jit(step), state, seconds, max_steps, seed, mean)


def _loop(step, state, seconds, max_steps, seed, params_of):
  t0 = time.perf_counter()
  history, i = [], 0
  key = jax.random.PRNGKey(seed + 7)
  window = []
  while i < max_steps and (i == 0 or time.perf_counter() - t0 < seconds):
    state, metrics = step(state, jax.random.fold_in(key, i))
    window.append(float(metrics['loss']))
    i += 1
    if i % 50 == 0 or i == max_steps:
      history.append({'step': i, 'loss': float(np.mean(window)), 'seconds': round(time.perf_counter() - t0, 1)})
      window = []
      if not math.isfinite(history[-1]['loss']):
        break
  return params_of(state), {'meta_steps': i, 'train_seconds': round(time.perf_counter() - t0, 1),
                            'history': history}


@functools.lru_cache(maxsize=None)
def _runner(makes: tuple, family, steps: int):
  """One jitted program per tuple of optimizer makers, family and horizon, reused by every call of the same shapes
  (the three baselines' program on the digits compiled in 8 CPU s, three programs in 19: they share the tasks)."""

  def curves_of(make, stacked, ks):
    def one(arg, k):
      k_task, k_run = jax.random.split(k)
      return lo.curve(make(arg), family.sample(k_task), k_run, steps)
    return jax.vmap(lambda arg: jax.vmap(lambda k: one(arg, k))(ks))(stacked)

  return jax.jit(lambda stacked, ks: tuple(curves_of(m, a, ks) for m, a in zip(makes, stacked)))


def curves(makes: tuple, family, keys: jax.Array, steps: int, args: tuple, chunk: int = 16) -> list[np.ndarray]:
  """For each optimizer maker of `makes` and its `args` (step sizes, or meta-parameters stacked on a leading axis),
  `[len(args), tasks, steps + 1]` training losses of `make(arg)` on the tasks of `family` drawn from `keys`: one
  compile for all."""
  run = _runner(tuple(makes), family, steps)
  parts = [run(tuple(args), keys[i:i + chunk]) for i in range(0, len(keys), chunk)]
  return [np.concatenate([np.asarray(p[j]) for p in parts], axis=1) for j in range(len(makes))]


def _score(final: np.ndarray) -> float:
  """Mean log final loss; inf if any task diverged."""
  if not np.all(np.isfinite(final)):
    return float('inf')
  return float(np.mean(np.log(np.maximum(final, 1e-30))))


def _baselines(grid) -> tuple[tuple, tuple]:
  """The makers and args of `curves` for every baseline over `grid`: tuning and evaluation share their program."""
  return tuple(BASELINES.values()), (jnp.asarray(grid),) * len(BASELINES)


def tune(family, keys, steps: int, grid) -> dict:
  """The grid for each baseline: the mean log final loss at each step size, and the best step size."""
  out = {}
  makes, args = _baselines(grid)
  for name, c in zip(BASELINES, curves(makes, family, keys, steps, args)):
    scores = {lr: _score(f) for lr, f in zip(grid, c[:, :, -1])}
    best = min(scores, key=scores.get)
    out[name] = {'grid': {f'{lr:g}': s for lr, s in scores.items()}, 'best_lr': best}
  return out


def summary(c: np.ndarray, at) -> dict:
  row = {}
  for s in at:
    v = c[:, s]
    finite = np.isfinite(v)
    row[str(s)] = {'mean': float(np.mean(v[finite])) if finite.any() else None,
                   'ci95': (float(1.96 * np.std(v[finite]) / math.sqrt(max(finite.sum(), 1))) if finite.any()
                            else None),
                   'median': float(np.median(v[finite])) if finite.any() else None,
                   'diverged': int((~finite).sum())}
  return row


def sign_test(wins: int, n: int) -> float:
  """Two-sided exact binomial p-value of `wins` successes in `n` trials at probability 1/2."""
  if n == 0:
    return 1.0
  tail = sum(math.comb(n, k) for k in range(min(wins, n - wins) + 1)) / 2 ** n
  return min(1.0, 2 * tail)


def paired(a: np.ndarray, b: np.ndarray) -> dict:
  """`a` against `b`, the final losses of two optimizers on the same tasks `[tasks]`: the mean per-task log ratio
  `log(a / b)` with a 95% t-interval (1.96 for 30+ tasks), the tasks where `a` is lower, and the sign test's p-value.
  Tasks where either diverged (non-finite) are left out and counted."""
  ok = np.isfinite(a) & np.isfinite(b)
  d = np.log(np.maximum(a[ok], 1e-30)) - np.log(np.maximum(b[ok], 1e-30))
  n, ties = int(d.size), int((d == 0).sum())
  wins = int((d < 0).sum())
  return {'mean_log_ratio': float(d.mean()) if n else None,
          'ci95': float(1.96 * d.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
          'median_ratio': float(np.exp(np.median(d))) if n else None,
          'lower_on': wins, 'tasks': n, 'ties': ties, 'left_out': int((~ok).sum()),
          'sign_test_p': sign_test(wins, n - ties)}


def evaluate(families, learned: dict, tuned: dict, keys: dict, horizons: dict) -> tuple[dict, dict]:
  """Curves of each optimizer on each family's held-out tasks: the learned optimizers ({name: (make, meta_params)})
  in one program, the baselines in tuning's. Also each learned optimizer against each tuned baseline, task by task
  (`paired`), keyed 'family/steps'."""
  out, pairs = {}, {}
  for fname, family in families.items():
    out[fname] = {}
    for steps in horizons[fname]:
      makes = tuple(make for make, _ in learned.values())
      metas = tuple(jax.tree.map(lambda x: x[None], meta) for _, meta in learned.values())
      res = {name: c[0] for name, c in zip(learned, curves(makes, family, keys[fname], steps, metas))}
      # The whole grid, as tuned: the same shapes reuse tuning's compiled program (len(grid) times the compute of
      # one step size, far less than a compile at these sizes); the tuned step size's curves are kept.
      grid = [float(g) for g in tuned[fname][str(steps)][next(iter(BASELINES))]['grid']]
      makes, args = _baselines(grid)
      for name, c in zip(BASELINES, curves(makes, family, keys[fname], steps, args)):
        res[name] = c[grid.index(tuned[fname][str(steps)][name]['best_lr'])]
      pairs[f'{fname}/{steps}'] = {f'{name} vs {base}': paired(res[name][:, steps], res[base][:, steps])
                                   for name in learned for base in BASELINES}
      at = sorted({0, 10, min(50, steps), min(100, steps), steps})
      out[fname][str(steps)] = {
          name: {'at': summary(c, at), 'mean_curve': np.nanmean(np.where(np.isfinite(c), c, np.nan), 0).tolist()}
          for name, c in res.items()}
  return out, pairs


def plot(report: dict, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  panels = [(f, s) for f, by in report['results'].items() for s in by]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
  for ax, (f, s) in zip(axes[0], panels):
    for name, r in report['results'][f][s].items():
      ax.plot(r['mean_curve'], label=name, lw=2 if name.startswith('lopt') else 1)
    ax.set_yscale('log')
    ax.set_title(f'{f}: {s} steps' + (' (trained here)' if f == report['training_family'] else ''))
    ax.set_xlabel('step')
  axes[0][0].set_ylabel('mean training loss (held-out tasks)')
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def table(report: dict) -> str:
  lines = ['| family | steps | ' + ' | '.join(n for n in next(iter(next(iter(report['results'].values())).values())))
           + ' |']
  lines.append('|---|---|' + '---|' * (lines[0].count('|') - 3))
  for f, by in report['results'].items():
    for s, res in by.items():
      cells = []
      for name, r in res.items():
        v = r['at'][s]
        cells.append('diverged' if v['mean'] is None else f"{v['mean']:.3g} ± {v['ci95']:.2g}" +
                     (f" ({v['diverged']} diverged)" if v['diverged'] else ''))
      lines.append(f'| {f} | {s} | ' + ' | '.join(cells) + ' |')
  lines.append('')
  lines.append('| family | steps | ' + ' | '.join(BASELINES) + ' |')
  lines.append('|---|---|' + '---|' * len(BASELINES))
  for f, by in report['tuning'].items():
    for s, t in by.items():
      lines.append(f'| {f} | {s} | ' + ' | '.join(f"{t[n]['best_lr']:g}" for n in BASELINES) + ' |')
  if report.get('paired'):
    lines += ['', '| family / steps | pair | mean log(loss ratio) ± 95% | median ratio | lower on | sign test p |',
              '|---|---|---|---|---|---|']
    for where, by in report['paired'].items():
      for pair, v in by.items():
        if v['mean_log_ratio'] is None:
          continue
        lines.append(f"| {where} | {pair} | {v['mean_log_ratio']:.2f} ± {v['ci95']:.2f} | {v['median_ratio']:.3g} | "
                     f"{v['lower_on']}/{v['tasks']} | {v['sign_test_p']:.2g} |")
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--minutes', type=float, default=8.0, help='meta-training budget of each learned optimizer')
  parser.add_argument('--tasks', type=int, default=64, help='held-out tasks per family (default 64)')
  parser.add_argument('--tune-tasks', type=int, default=32, help='meta-training tasks for the step-size grid')
  parser.add_argument('--omniglot', action='store_true', help='add 5-way Omniglot conv4 tasks (14x14, 100 steps)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--quick', action='store_true', help='a few meta-steps, few tasks; writes to /tmp')
  parser.add_argument('--out', help='where the JSON and PNG go (default benchmarks/results)')
  parser.add_argument('--table', action='store_true', help='print the markdown table of the JSON in --out')
  args = parser.parse_args()
  args.out = args.out or ('/tmp/jmeta_learned_optimizers' if args.quick else os.path.join(HERE, 'results'))
  path = os.path.join(args.out, 'learned_optimizers.json')
  if args.table:
    with open(path) as f:
      print(table(json.load(f)))
    return
  os.makedirs(args.out, exist_ok=True)
  from report import matmul_rates  # benchmarks/report.py, beside this script
  t0 = time.perf_counter()
  machine = {'cpus': os.cpu_count(), 'cores_used': len(os.sched_getaffinity(0)), 'platform': platform.platform(),
             'backend': jax.default_backend(), 'jax': jax.__version__, 'matmul_gflops_before': matmul_rates(args.quick)}
  quick = args.quick
  tasks = 4 if quick else args.tasks
  tune_tasks = 4 if quick else args.tune_tasks
  grid = (1e-2, 1e-1) if quick else GRID
  horizons_q = (20,) if quick else HORIZONS
  seconds = 1e9 if quick else 60 * args.minutes
  train_family = lo.quadratic(10)
  settings = {
      'lopt_lstm': dict(method='truncated backprop (Andrychowicz et al.)', tasks=16, truncation=20, horizon=100,
                        lr=1e-3, max_steps=4 if quick else 100_000),
      'lopt_mlp': dict(method="PES (evosax's PersistentES)", population=32, truncation=20, horizon=100, lr=3e-3,
                       std=0.01, max_steps=4 if quick else 100_000),
  }
  if quick:
    settings['lopt_lstm'].update(tasks=2, truncation=5, horizon=10)
    settings['lopt_mlp'].update(population=4, truncation=5, horizon=10)
  train = {}
  s = settings['lopt_lstm']
  lstm_params, train['lopt_lstm'] = train_lstm(
      train_family, seconds, s['max_steps'], tasks=s['tasks'], truncation=s['truncation'], horizon=s['horizon'],
      lr=s['lr'], seed=args.seed)
  print('lstm', train['lopt_lstm']['meta_steps'], 'meta-steps', train['lopt_lstm']['history'][-1:], flush=True)
  s = settings['lopt_mlp']
  mlp_params, train['lopt_mlp'] = train_mlp_pes(
      train_family, seconds, s['max_steps'], population=s['population'], truncation=s['truncation'],
      horizon=s['horizon'], lr=s['lr'], std=s['std'], seed=args.seed)
  print('mlp', train['lopt_mlp']['meta_steps'], 'meta-steps', train['lopt_mlp']['history'][-1:], flush=True)
  learned = {'lopt_lstm': (lo.lstm_optimizer, lstm_params), 'lopt_mlp': (lo.mlp_optimizer, mlp_params)}

  families = {'quadratic': train_family, 'digits': lo.digits()}
  horizons = {'quadratic': horizons_q, 'digits': horizons_q}
  if args.omniglot:
    from jmeta.datasets import omniglot
    images = omniglot.split_images(omniglot.load(size=28), 'test')
    images = images.reshape(images.shape[0], 20, 14, 2, 14, 2, 1).mean((3, 5))  # 2x2 average: 14x14
    families['omniglot'] = lo.omniglot_classification(jnp.asarray(images), ways=5, examples=10, filters=16)
    horizons['omniglot'] = (min(horizons_q),) if quick else (100,)
  root = jax.random.PRNGKey(args.seed)
  train_keys = jax.random.split(jax.random.fold_in(root, 1), tune_tasks)   # the meta-training stream's tasks
  test_keys = {f: jax.random.split(jax.random.fold_in(root, 1000 + i), tasks) for i, f in enumerate(families)}
  tuning = {}
  for f, family in families.items():
    tuning[f] = {str(s): tune(family, train_keys, s, grid) for s in horizons[f]}
    print('tuned', f, {s: {n: t[n]['best_lr'] for n in t} for s, t in tuning[f].items()}, flush=True)
  results, pairs = evaluate(families, learned, tuning, test_keys, horizons)
  report = {'benchmark': 'learned_optimizers', 'quick': quick, 'machine': machine,
            'command': 'python benchmarks/learned_optimizers.py' + (' --quick' if quick else '') +
            (f' --minutes {args.minutes:g}' if args.minutes != 8 else '') + (' --omniglot' if args.omniglot else ''),
            'training_family': 'quadratic', 'settings': settings, 'training': train,
            'grid': list(grid), 'tuning_tasks': tune_tasks, 'held_out_tasks': tasks,
            'tuning': tuning, 'results': results, 'paired': pairs}
  adam100 = results['quadratic'][str(min(horizons_q))]['adam']['at'][str(min(horizons_q))]['mean']
  report['target'] = {name: {'loss': results['quadratic'][str(min(horizons_q))][name]['at'][str(min(horizons_q))]
                             ['mean'], 'adam': adam100} for name in learned}
  for v in report['target'].values():
    v['beats_adam'] = v['loss'] is not None and v['loss'] < adam100
  machine['matmul_gflops_after'] = matmul_rates(args.quick)
  report['total_seconds'] = round(time.perf_counter() - t0, 1)
  with open(path, 'w') as f:
    json.dump(report, f, indent=1)
  plot(report, os.path.join(args.out, 'learned_optimizers.png'))
  print(table(report))
  print(f'total {report["total_seconds"]} s; wrote {path} and learned_optimizers.png')


if __name__ == '__main__':
  main()
