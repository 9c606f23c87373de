"""Neural processes on 1-D Gaussian-process functions beside the exact GP, and on sinusoids beside MAML.

GP: CNP, NP and ANP are trained on the attentive NP notebook's functions (Kim et al., 2019, arXiv:1901.05761: a
squared-exponential kernel drawn per function, lengthscale U[0.1, 0.6], scale U[0.1, 1], 3 to 49 context points, at
most 49 in all; Adam 1e-4, batches of 16), each for its published number of steps or `--minutes` of wall-clock,
whichever comes first. Each is scored on `--episodes` held-out functions at each context size in `--context`, on 50
held-out targets per function (never the context points): the target log-likelihood per point (the marginal
predictive of each target; for NP and ANP a Monte Carlo estimate with 32 draws of z from q(z | C), biased low by
Jensen's inequality), the joint log-likelihood per point (`joint_log_likelihood`: exact for the CNP, importance
sampling with 100 draws from q(z | C and T) for NP and ANP), and the squared error of the predictive mean. The exact
GP posterior with each function's true kernel (`jmeta.datasets.gp_predictive`, in float64) is the limit; the gap
is GP minus learner, in nats per point, with a 95% interval over functions (paired: the same functions).

Sinusoid: CNP, NP and ANP trained on Finn et al.'s sinusoids (K = 10, `--sinusoid-minutes` each) and scored by the
MSE of the predictive mean on 100 query points, beside MAML's figures from `results/sinusoid.json`.

Writes `results/neural_processes.json` and `neural_processes.png` (log-likelihood against context size, with the
GP line). Full mode budget on this 2-core CPU: 3 x `--minutes` (default 45) + 3 x `--sinusoid-minutes` (default
10) of training, plus about 10 minutes of evaluation: about 2 h 45 min.

    python benchmarks/neural_processes.py                       # the full benchmark
    python benchmarks/neural_processes.py --quick               # tiny models and budgets, to /tmp: a smoke test
    python benchmarks/neural_processes.py --table               # the markdown table from results/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from jmeta import experiments, losses
from jmeta.algorithms.neural_process import data_key, joint_log_likelihood, predictive_moments
from jmeta.datasets import gp
from jmeta.evaluation import evaluator, summarize
from jmeta.tasks import Task
from jmeta.training import fit

HERE = os.path.dirname(os.path.abspath(__file__))
ALGOS = ('cnp', 'np', 'anp')
CONTEXT = (3, 5, 10, 20, 30, 50)
TARGETS = 50
# The attentive NP notebook's data and optimiser for the three learners, so that they are compared on one task.
GP_SETTING = dict(random_kernel=True, context_min=3, context_max=49, extra_min=0, extra_max=46, max_points=49,
                  meta_batch=16, outer_lr=1e-4, outer_opt='adam')
QUICK_MODEL = dict(hidden=16)
QUICK_LATENT = dict(latent_dim=8)


def _config(algo: str, dataset: str, args: argparse.Namespace, **fields) -> experiments.Config:
  if args.quick:
    fields.update(QUICK_MODEL, **(QUICK_LATENT if algo != 'cnp' else {}), **({'heads': 2} if algo == 'anp' else {}),
                  steps=args.quick_steps, log_every=args.quick_steps)
  return experiments.Config(algo, dataset, seed=args.seed, valid_episodes=0, **{'log_every': 500, **fields})


def _train(experiment, minutes: float) -> tuple[object, dict]:
  c = experiment.config
  state = experiments.initial_state(experiment)
  t0 = time.perf_counter()
  state = fit(experiment.learner, experiment.outer_opt, experiment.train_tasks, state, meta_batch=c.meta_batch,
              steps=c.steps, log_every=c.log_every, progress=False, time_limit=60 * minutes,
              grad_of_mean=experiment.algorithm.grad_of_mean)
  jax.block_until_ready(state)
  seconds = time.perf_counter() - t0
  return state, {'meta_steps': int(state.step), 'published_steps': c.steps, 'train_seconds': round(seconds, 1),
                 'config': c.to_json()}


def held_out(episodes: int, seed: int) -> tuple[Task, gp.Kernel]:
  """`episodes` functions, each with 50 candidate context points and 50 held-out targets, and their kernels, drawn
  once in float32 (the learners and the GP are scored on the very same functions)."""
  sample = gp.gp_functions(50, TARGETS, targets_include_context=False, **gp.RANDOM_KERNEL)
  keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 12345), episodes)
  draw = jax.jit(jax.vmap(lambda k: (sample(k), gp.task_kernel(k, **gp.RANDOM_KERNEL))))
  return jax.tree.map(np.asarray, draw(keys))


def _scores(fn, functions, sizes, chunk: int = 50) -> dict:
  """`fn(task, kernel) -> {name: scalar}` on each function at each context size, `{size: {name: [episodes]}}`: the
  first `size` candidate points are the context. One shape for every size, so one compiled program."""

  def one(task_and_kernel, n):
    task, kernel = task_and_kernel
    return fn(task._replace(support=task.support._replace(mask=jnp.arange(50) < n)), kernel)

  # A Python loop over jitted vmaps of `chunk` functions, not one `lax.map`: twice a float64 `lax.map` of the GP
  # scores hung here with every XLA:CPU thread waiting on a futex (jax 0.10.2, a loaded 2-core machine).
  run = jax.jit(jax.vmap(one, in_axes=(0, None)))
  episodes = len(jax.tree.leaves(functions)[0])

  def scores(n):
    parts = [run(jax.tree.map(lambda a: a[i:i + chunk], functions), n) for i in range(0, episodes, chunk)]
    return jax.tree.map(lambda *p: np.concatenate([np.asarray(x) for x in p]), *parts)

  return {n: scores(n) for n in sizes}


def score_learner(experiment, params, functions, sizes) -> dict:
  learner = experiment.test_learner
  score = losses.masked(losses.gaussian_log_likelihood)

  def fn(task: Task, kernel) -> dict:
    del kernel
    predictions = learner.predict(learner.adapt(params, task.support), task.query.x)
    mean, _ = predictive_moments(predictions)
    joint = joint_log_likelihood(learner, params, task, data_key(task.support, task.query), samples=100)
    return {'log_likelihood': score(predictions, task.query.y, task.query.mask), 'joint_log_likelihood': joint,
            'mse': jnp.mean(jnp.square(mean - task.query.y))}

  return _scores(fn, functions, sizes)


def score_gp(functions, sizes) -> dict:
  """The exact GP with each function's kernel, in float64 (the predictive variance is a small difference)."""

  def fn(task: Task, kernel) -> dict:
    task = jax.tree.map(lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a, task)
    k = dict(lengthscale=kernel.lengthscale.astype(jnp.float64), scale=kernel.scale.astype(jnp.float64))
    mean, _ = gp.gp_predictive(task.support, task.query.x, **k)
    return {'log_likelihood': jnp.mean(gp.gp_log_likelihood(task.support, task.query, **k)),
            'joint_log_likelihood': gp.gp_joint_log_likelihood(task.support, task.query, **k) / TARGETS,
            'mse': jnp.mean(jnp.square(mean - task.query.y))}

  with jax.enable_x64(True):
    return _scores(fn, functions, sizes)


def _summary(values: np.ndarray) -> dict:
  s = summarize(values)
  return {'mean': s.mean, 'ci95': s.ci95}


def gp_section(args: argparse.Namespace) -> dict:
  sizes = args.context
  t0 = time.perf_counter()
  functions = held_out(args.episodes, args.seed)
  exact = score_gp(functions, sizes)
  rows = {'gp': {'curve': [{'context': n, **{k: _summary(v) for k, v in exact[n].items()}} for n in sizes],
                 'eval_seconds': round(time.perf_counter() - t0, 1)}}
  for algo in args.algos:
    experiment = experiments.build(_config(algo, 'gp', args, **GP_SETTING))
    state, record = _train(experiment, args.minutes)
    t0 = time.perf_counter()
    ours = score_learner(experiment, state.params, functions, sizes)
    curve = []
    for n in sizes:
      point = {'context': n, **{k: _summary(v) for k, v in ours[n].items()}}
      point['gap_nats'] = _summary(exact[n]['log_likelihood'] - ours[n]['log_likelihood'])
      point['joint_gap_nats'] = _summary(exact[n]['joint_log_likelihood'] - ours[n]['joint_log_likelihood'])
      curve.append(point)
    rows[algo] = {**record, 'eval_seconds': round(time.perf_counter() - t0, 1), 'curve': curve,
                  'command': f'jmeta train --algo {algo} --dataset gp ' + ' '.join(
                      f'--{k.replace("_", "-")} {v}' if v is not True else f'--{k.replace("_", "-")}'
                      for k, v in GP_SETTING.items()) + f' --seed {args.seed} --out DIR'}
    ten = next((p for p in curve if p['context'] == 10), curve[0])
    print(f"gp {algo:>4}: {record['meta_steps']} steps in {record['train_seconds']:.0f} s; at {ten['context']} "
          f"context points log-likelihood {ten['log_likelihood']['mean']:.3f} ± {ten['log_likelihood']['ci95']:.3f},"
          f" gap to the GP {ten['gap_nats']['mean']:.3f} nats", flush=True)
  return rows


def sinusoid_section(args: argparse.Namespace) -> dict:
  rows = {}
  for algo in args.algos:
    experiment = experiments.build(_config(algo, 'sinusoid', args, shots=10))
    state, record = _train(experiment, args.sinusoid_minutes)
    scores = evaluator(experiment.test_learner, experiment.test_tasks, experiment.score)
    s = summarize(scores(state.params, experiments.test_key(args.seed), args.episodes))
    rows[algo] = {**record, 'mse': s.mean, 'ci95': s.ci95, 'episodes': args.episodes,
                  'command': f'jmeta train --algo {algo} --dataset sinusoid --shots 10 --seed {args.seed} --out DIR'}
    print(f"sinusoid {algo:>4}: {record['meta_steps']} steps in {record['train_seconds']:.0f} s; MSE {s.mean:.3f} ± "
          f"{s.ci95:.3f}", flush=True)
  path = os.path.join(HERE, 'results', 'sinusoid.json')
  if os.path.exists(path):
    with open(path) as f:
      maml = next((r for r in json.load(f)['results'] if r['algo'] == 'maml' and r['shots'] == 10), None)
    if maml:
      rows['maml'] = {'meta_steps': maml['meta_steps'], 'train_seconds': maml['train_seconds'],
                      'mse_1_step': maml['curve'][1]['mse'], 'ci95_1_step': maml['curve'][1]['ci95'],
                      'mse_10_steps': maml['curve'][10]['mse'], 'ci95_10_steps': maml['curve'][10]['ci95'],
                      'source': 'results/sinusoid.json'}
  return rows


def plot(report: dict, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import matplotlib.ticker
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
  sizes = [p['context'] for p in report['gp']['gp']['curve']]
  for name, row in report['gp'].items():
    style = dict(color='k', ls='--', label='exact GP (true kernel)') if name == 'gp' else dict(marker='o', ms=3,
                                                                                                label=name)
    for ax, key in ((ax0, 'log_likelihood'), (ax1, 'mse')):
      mean = np.array([p[key]['mean'] for p in row['curve']])
      half = np.array([p[key]['ci95'] for p in row['curve']])
      line, = ax.plot(sizes, mean, **style)
      low = mean - half if key == 'log_likelihood' else np.maximum(mean - half, mean / 10)  # MSE: a log axis
      ax.fill_between(sizes, low, mean + half, alpha=0.15, color=line.get_color())
  ax0.set(xlabel='context points', ylabel='target log-likelihood per point (95% CI)', xscale='log',
          title='held-out targets of GP functions')
  ax1.set(xlabel='context points', ylabel='MSE of the predictive mean', xscale='log', yscale='log')
  for ax in (ax0, ax1):
    ax.set_xticks(sizes, [str(n) for n in sizes], minor=False)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
  ax0.legend()
  if report.get('quick'):
    fig.suptitle('--quick: tiny models, a few steps; not a result', color='r')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def table(report: dict) -> str:
  """Markdown: log-likelihood per point and the gap to the GP at each context size; then the sinusoid MSEs."""
  sizes = [p['context'] for p in report['gp']['gp']['curve']]
  lines = ['| model | steps | training min | ' + ' | '.join(f'{n} context' for n in sizes) + ' |',
           '|---|---|---|' + '---|' * len(sizes)]
  for name, row in report['gp'].items():
    cells = ' | '.join(f"{p['log_likelihood']['mean']:.2f} ± {p['log_likelihood']['ci95']:.2f}" + (
        f" (gap {p['gap_nats']['mean']:.2f})" if 'gap_nats' in p else '') for p in row['curve'])
    steps = row.get('meta_steps', '-')
    minutes = f"{row['train_seconds'] / 60:.0f}" if 'train_seconds' in row else '-'
    lines.append(f'| {name} | {steps} | {minutes} | {cells} |')
  sin = report.get('sinusoid', {})
  if sin:
    lines += ['', '| sinusoid K = 10 | steps | MSE (95% CI) |', '|---|---|---|']
    for name, row in sin.items():
      if name == 'maml':
        lines.append(f"| maml (1 / 10 inner steps) | {row['meta_steps']} | {row['mse_1_step']:.3f} ± "
                     f"{row['ci95_1_step']:.3f} / {row['mse_10_steps']:.3f} ± {row['ci95_10_steps']:.3f} |")
      else:
        lines.append(f"| {name} | {row['meta_steps']} | {row['mse']:.3f} ± {row['ci95']:.3f} |")
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--algos', nargs='+', default=list(ALGOS), choices=ALGOS)
  parser.add_argument('--context', nargs='+', type=int, default=list(CONTEXT), help='context sizes scored')
  parser.add_argument('--minutes', type=float, default=45.0, help='training budget of each GP model (default 45)')
  parser.add_argument('--sinusoid-minutes', type=float, default=10.0, help='of each sinusoid model (default 10)')
  parser.add_argument('--episodes', type=int, default=1000, help='held-out functions per point (default 1000)')
  parser.add_argument('--no-sinusoid', action='store_true', help='skip the sinusoid section')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--quick', action='store_true', help='tiny models, a few steps, few functions; writes to '
                      '/tmp/jmeta_neural_processes unless --out says: checks the harness only')
  parser.add_argument('--quick-steps', type=int, default=30, help='meta-steps of each model with --quick')
  parser.add_argument('--out', help='where the JSON and PNG go (default benchmarks/results)')
  parser.add_argument('--table', action='store_true', help='print the markdown table of the results in --out')
  args = parser.parse_args()
  args.out = args.out or ('/tmp/jmeta_neural_processes' if args.quick else os.path.join(HERE, 'results'))
  path = os.path.join(args.out, 'neural_processes.json')
  if args.table:
    with open(path) as f:
      print(table(json.load(f)))
    return
  if args.quick:
    args.episodes = min(args.episodes, 50)
    args.context = [n for n in args.context if n in (3, 10, 50)] or args.context[:2]
  if any(not 1 <= n <= 50 for n in args.context):
    raise SystemExit(f'--context sizes must lie in 1..50; got {args.context}')
  os.makedirs(args.out, exist_ok=True)
  from report import matmul_rates  # benchmarks/report.py, beside this script
  t0 = time.perf_counter()
  report = {'benchmark': 'neural_processes', 'quick': args.quick,
            'machine': {'cpus': os.cpu_count(), 'cores_used': len(os.sched_getaffinity(0)),
                        'platform': platform.platform(), 'backend': jax.default_backend(), 'jax': jax.__version__,
                        'matmul_gflops': matmul_rates(args.quick)},
            'command': 'python benchmarks/neural_processes.py' + (' --quick' if args.quick else '') +
            (f' --minutes {args.minutes:g}' if args.minutes != 45 else ''),
            'setting': {'gp': GP_SETTING, 'targets_per_function': TARGETS, 'episodes': args.episodes,
                        'test_samples_of_z': 32, 'joint_importance_samples': 100},
            'gp': gp_section(args)}
  if not args.no_sinusoid:
    report['sinusoid'] = sinusoid_section(args)
  report['total_seconds'] = round(time.perf_counter() - t0, 1)
  with open(path, 'w') as f:
    json.dump(report, f, indent=1)
  plot(report, os.path.join(args.out, 'neural_processes.png'))
  print(table(report))
  print(f'total {report["total_seconds"]} s; wrote {path} and neural_processes.png')


if __name__ == '__main__':
  main()
