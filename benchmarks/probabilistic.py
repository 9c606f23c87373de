"""PLATIPUS beside MAML on the ambiguous sine/line regression of Finn, Xu & Levine (2018, arXiv:1806.02817).

Three learners train on the same tasks (`jmeta.datasets.sine_line`: half sines, half lines, 5 shots, noise 0.3;
1-40-40-1 ReLU network, one inner SGD step of 0.01, meta-batch 25, Adam 1e-3, 70,000 meta-steps or `--minutes`,
whichever comes first):

- `maml`: MAML on squared error, a point estimate; its noise level is fitted afterwards as the root mean squared
  query residual after adaptation on 1,000 validation tasks (the maximum-likelihood noise of a Gaussian
  predictive `N(f(x), s**2)`);
- `maml-gaussian`: MAML whose network outputs a mean and a standard deviation (softplus + 1e-3), trained on the
  Gaussian negative log-likelihood in both loops;
- `platipus`: `jmeta.platipus` as the registry builds it (`jmeta train --algo platipus --dataset ambiguous`),
  its predictive the mixture of `--samples` adapted models.

Scored on `--episodes` held-out tasks (the same for all three; 100 query points each on [-5, 5]): the query
log-likelihood per point, the coverage of central 95% predictive intervals (the fraction of query targets whose
predictive CDF lies in [0.025, 0.975]; nominal 0.95) and the MSE of the predictive mean, each a mean over tasks
with its 95% interval. Ambiguity: support sets of 5 points from a window of width 2 anywhere in [-5, 5], kept when
both a sine and a line of the prior's ranges fit them within the noise (`jmeta.datasets.ambiguous.ambiguous`);
for each, the `--samples` adapted models of PLATIPUS are classed as sine or line by least squares on a grid of
[-5, 5], and the benchmark reports how often one support set's samples hold both (the point estimates hold one
function, so 0 by construction), beside the same rate for support sets drawn over the whole range.

Writes `results/probabilistic.json` and `probabilistic.png` (sampled functions for ambiguous and unambiguous
support sets, as the paper's figure), and the machine's matmul rate before and after.

    python benchmarks/probabilistic.py                 # the full benchmark (about 10 minutes on a 2-core CPU)
    python benchmarks/probabilistic.py --quick         # tiny budgets, to /tmp: a smoke test
    python benchmarks/probabilistic.py --table         # the markdown table from results/
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmeta import experiments, losses
from jmeta.algorithms.maml import maml
from jmeta.algorithms.platipus import platipus
from jmeta.datasets import ambiguous as amb
from jmeta.evaluation import summarize
from jmeta.models.mlp import MLP
from jmeta.tasks import Task
from jmeta.training import fit, init_state

HERE = os.path.dirname(os.path.abspath(__file__))
SHOTS, QUERIES, NOISE, WINDOW = 5, 100, amb.NOISE, 2.0
# MAML's sinusoid recipe (Finn et al., 2017, section 5.1), as the registry's platipus entry takes it.
RECIPE = dict(meta_batch=25, steps=70_000, inner_lr=0.01, outer_lr=1e-3)
GRID = np.linspace(-5, 5, 200, dtype=np.float32)[:, None]


def gaussian_head(apply_fn):
  """`apply_fn` with two outputs read as a mean and a standard deviation (softplus + 1e-3): `[n, 2]`."""
  def apply(params, x):
    out = apply_fn(params, x)
    return jnp.concatenate([out[:, :1], jax.nn.softplus(out[:, 1:]) + 1e-3], axis=1)
  return apply


def _train(learner, params, sample, args, grad_of_mean=True):
  c = RECIPE if not args.quick else dict(RECIPE, steps=args.quick_steps)
  opt = optax.adam(c['outer_lr'])
  state = init_state(learner, opt, jax.random.PRNGKey(args.seed), params)
  log_every = min(1000, c['steps'])
  t0 = time.perf_counter()
  state = fit(learner, opt, sample, state, meta_batch=c['meta_batch'], steps=c['steps'], log_every=log_every,
              progress=False, time_limit=60 * args.minutes, grad_of_mean=grad_of_mean)
  jax.block_until_ready(state)
  return state, {'meta_steps': int(state.step), 'published_steps': c['steps'],
                 'train_seconds': round(time.perf_counter() - t0, 1)}


@functools.lru_cache(maxsize=None)
def _vmapped(fn):
  """`jax.jit(jax.vmap(fn))`, one per function: a second call with the same shapes reuses its compiled program."""
  return jax.jit(jax.vmap(fn))


def _chunked(fn, tasks, chunk=100):
  """`fn(task) -> pytree` over a batch of tasks, as jitted vmaps of `chunk` tasks, concatenated in NumPy."""
  run = _vmapped(fn)
  n = len(jax.tree.leaves(tasks)[0])
  parts = [run(jax.tree.map(lambda a: a[i:i + chunk], tasks)) for i in range(0, n, chunk)]
  return jax.tree.map(lambda *p: np.concatenate([np.asarray(x) for x in p]), *parts)


def mixture_scores(predictions: jax.Array, y: jax.Array) -> dict:
  """Scores of a Gaussian (mixture) predictive `[n, 2]` or `[n, samples, 2]` against `y: [n, 1]`."""
  if predictions.ndim == 2:
    predictions = predictions[:, None]
  mean, std = predictions[..., 0], predictions[..., 1]
  cdf = jnp.mean(jax.scipy.stats.norm.cdf((y - mean) / std), axis=1)
  return {'log_likelihood': losses.gaussian_log_likelihood(predictions, y),
          'coverage': jnp.mean((cdf >= 0.025) & (cdf <= 0.975)),
          'mse': jnp.mean(jnp.square(jnp.mean(mean, axis=1) - y[:, 0]))}


def held_out(sample, episodes: int, seed: int) -> Task:
  keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 777), episodes)
  return jax.tree.map(np.asarray, _vmapped(sample)(keys))


def ambiguous_sets(count: int, seed: int, pool: int) -> tuple[Task, float]:
  """`count` test tasks whose windowed support sets both families fit (`amb.ambiguous`), and the fraction of the
  `pool` windowed draws that passed."""
  sample = amb.sine_line(SHOTS, QUERIES, noise=NOISE, window=WINDOW)
  tasks = held_out(sample, pool, seed + 1)
  keep = np.asarray(jax.jit(jax.vmap(lambda s: amb.ambiguous(s, NOISE)))(tasks.support))
  index = np.flatnonzero(keep)[:count]
  return jax.tree.map(lambda a: a[index], tasks), float(keep.mean())


def both_families(fast_fn, *task_sets: Task) -> list[np.ndarray]:
  """For each task of each set, whether its sampled adapted models include a sine and a line: `fast_fn(support) ->
  [samples, grid]` values on GRID. One compiled program for sets of the same shapes."""
  grid = jnp.asarray(GRID)

  def one(task):
    curves = fast_fn(task.support)
    sines = jax.vmap(lambda c: amb.is_sine(grid, c))(curves)
    return jnp.stack([jnp.any(sines) & jnp.any(~sines), jnp.mean(sines)])

  return [_chunked(one, tasks) for tasks in task_sets]


def _summary(values) -> dict:
  s = summarize(np.asarray(values))
  return {'mean': s.mean, 'ci95': s.ci95}


def run(args) -> dict:
  from report import matmul_rate  # benchmarks/report.py, beside this script
  report = {'benchmark': 'probabilistic', 'quick': args.quick, 'machine': {
      'processor': platform.processor() or platform.machine(), 'cpus': os.cpu_count(), 'jax': jax.__version__,
      'matmul_gflops_before': matmul_rate(args.quick)}, 'settings': {
          'shots': SHOTS, 'queries': QUERIES, 'noise': NOISE, 'window': WINDOW, 'samples': args.samples,
          'episodes': args.episodes, 'minutes_cap': args.minutes, **RECIPE}}
  t_start = time.perf_counter()
  train_tasks = amb.sine_line(SHOTS, SHOTS, noise=NOISE)
  query_tasks = amb.sine_line(SHOTS, QUERIES, noise=NOISE)  # one sampler: one compiled draw for both
  test_tasks = held_out(query_tasks, args.episodes, args.seed)
  valid_tasks = held_out(query_tasks, args.episodes, args.seed + 100)
  amb_tasks, passed = ambiguous_sets(args.ambiguous_sets, args.seed, pool=max(20 * args.ambiguous_sets, 500))
  plain_tasks = jax.tree.map(lambda a: a[:args.ambiguous_sets], test_tasks)
  hidden = (40, 40) if not args.quick else (8, 8)
  x0 = jnp.zeros((SHOTS, 1))
  rows, curves = {}, {}

  # MAML, a point estimate; its noise level fitted on validation tasks.
  model = MLP(hidden, out=1)
  learner = maml(model.apply, RECIPE['inner_lr'], 1)
  state, record = _train(learner, model.init(jax.random.PRNGKey(args.seed), x0), train_tasks, args)
  fast_of = lambda support: learner.adapt(state.params, support)
  residual = _chunked(lambda t: jnp.mean(jnp.square(model.apply(fast_of(t.support), t.query.x) - t.query.y)),
                      valid_tasks)
  noise = float(np.sqrt(residual.mean()))

  def maml_predict(task):
    mean = model.apply(fast_of(task.support), task.query.x)
    return jnp.concatenate([mean, jnp.full_like(mean, noise)], axis=1)

  rows['maml'] = {**record, 'fitted_noise': noise, 'scores': _chunked(
      lambda t: mixture_scores(maml_predict(t), t.query.y), test_tasks)}
  curves['maml'] = lambda support: model.apply(fast_of(support), jnp.asarray(GRID))[None, :, 0]

  # MAML with a Gaussian head.
  head = MLP(hidden, out=2)
  g_apply = gaussian_head(head.apply)
  g_learner = maml(g_apply, RECIPE['inner_lr'], 1, loss_fn=losses.gaussian_nll)
  g_state, record = _train(g_learner, head.init(jax.random.PRNGKey(args.seed), x0), train_tasks, args)
  g_fast = lambda support: g_learner.adapt(g_state.params, support)
  rows['maml-gaussian'] = {**record, 'scores': _chunked(
      lambda t: mixture_scores(g_apply(g_fast(t.support), t.query.x), t.query.y), test_tasks)}
  curves['maml-gaussian'] = lambda support: g_apply(g_fast(support), jnp.asarray(GRID))[None, :, 0]

  # PLATIPUS with the registry's settings (`jmeta train --algo platipus --dataset ambiguous`).
  c = experiments.resolve(experiments.Config('platipus', 'ambiguous', seed=args.seed, samples=args.samples))
  p_model = MLP(hidden, out=1)
  p_learner = platipus(p_model.apply, c.inner_lr, c.inner_steps, samples=c.samples, kl_weight=c.kl_weight,
                       init_std=c.init_std, init_gamma=c.inner_lr)
  params = p_model.init(jax.random.PRNGKey(args.seed), x0)
  p_state, record = _train(p_learner, params, train_tasks, args)
  p = p_state.params
  rows['platipus'] = {**record, 'config': c.to_json(),
                      'learned': {'gamma_p': float(p.gamma_p), 'gamma_q': float(p.gamma_q),
                                  'noise': float(jnp.exp(p.log_noise)),
                                  'prior_std_mean': float(np.mean(np.concatenate(
                                      [np.exp(np.ravel(a)) for a in jax.tree.leaves(p.log_std)])))},
                      'scores': _chunked(lambda t: mixture_scores(
                          p_learner.predict(p_learner.adapt(p, t.support), t.query.x), t.query.y), test_tasks)}
  curves['platipus'] = lambda support: jnp.swapaxes(
      p_learner.predict(p_learner.adapt(p, support), jnp.asarray(GRID))[..., 0], 0, 1)

  for name, row in rows.items():
    row['scores'] = {k: _summary(v) for k, v in row['scores'].items()}
    if name == 'platipus':
      amb_both, plain_both = both_families(curves[name], amb_tasks, plain_tasks)
      row['both_families'] = {'ambiguous': _summary(amb_both[:, 0]), 'unambiguous': _summary(plain_both[:, 0]),
                              'ambiguous_sine_fraction': float(amb_both[:, 1].mean())}
    else:
      row['both_families'] = {'ambiguous': {'mean': 0.0, 'ci95': 0.0}, 'note': 'one function per task'}
    s = row['scores']
    print(f"{name:>14}: {row['meta_steps']} steps in {row['train_seconds']:.0f} s; log-likelihood "
          f"{s['log_likelihood']['mean']:.3f} ± {s['log_likelihood']['ci95']:.3f}, coverage "
          f"{s['coverage']['mean']:.3f} ± {s['coverage']['ci95']:.3f}, MSE {s['mse']['mean']:.3f}; both families "
          f"on ambiguous sets {row['both_families']['ambiguous']['mean']:.3f}", flush=True)
  report['ambiguous_sets'] = {'count': int(len(amb_tasks.support.x)), 'pass_rate_of_windowed_draws': passed}
  report['results'] = rows
  report['command'] = 'python benchmarks/probabilistic.py' + (' --quick' if args.quick else '')
  report['total_seconds'] = round(time.perf_counter() - t_start, 1)
  report['machine']['matmul_gflops_after'] = matmul_rate(args.quick)
  plot(curves, amb_tasks, plain_tasks, args)
  return report


def plot(curves, amb_tasks, plain_tasks, args) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
  for row, (tasks, label) in enumerate(((amb_tasks, 'ambiguous support set'), (plain_tasks, 'support over [-5, 5]'))):
    for col in range(3):
      ax = axes[row, col]
      if col >= len(tasks.support.x):
        continue
      task = jax.tree.map(lambda a: a[col], tasks)
      order = np.argsort(task.query.x[:, 0])
      ax.plot(task.query.x[order, 0], task.query.y[order, 0], '.', color='0.75', ms=3, label='query targets')
      samples = np.asarray(jax.jit(curves['platipus'])(task.support))
      for i, c in enumerate(samples):
        ax.plot(GRID[:, 0], c, '--', lw=1, color=plt.cm.tab10(i % 10), label='PLATIPUS samples' if i == 0 else None)
      ax.plot(GRID[:, 0], np.asarray(jax.jit(curves['maml'])(task.support))[0], 'k', lw=2, label='MAML')
      ax.plot(task.support.x[:, 0], task.support.y[:, 0], 'o', color='crimson', ms=7, label='support')
      ax.set_ylim(-8, 8)
      ax.set_title(label, fontsize=9)
  axes[0, 0].legend(fontsize=7, loc='lower left')
  fig.suptitle('PLATIPUS samples (dashed) and MAML (black), 5 shots of a sine or a line')
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, 'probabilistic.png'), dpi=110)
  plt.close(fig)


def table(report: dict) -> str:
  lines = ['| learner | meta-steps | log-likelihood / point | 95% coverage | MSE | both families (ambiguous) |',
           '|---|---|---|---|---|---|']
  for name, r in report['results'].items():
    s = r['scores']
    lines.append(f"| {name} | {r['meta_steps']:,} | {s['log_likelihood']['mean']:.3f} ± "
                 f"{s['log_likelihood']['ci95']:.3f} | {s['coverage']['mean']:.3f} ± {s['coverage']['ci95']:.3f} | "
                 f"{s['mse']['mean']:.3f} ± {s['mse']['ci95']:.3f} | "
                 f"{r['both_families']['ambiguous']['mean']:.3f} |")
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--minutes', type=float, default=8.0, help='training cap of each learner (default 8)')
  parser.add_argument('--episodes', type=int, default=1000, help='held-out tasks (default 1000)')
  parser.add_argument('--samples', type=int, default=10, help='PLATIPUS adapted models per task (default 10)')
  parser.add_argument('--ambiguous-sets', type=int, default=200, help='ambiguous support sets (default 200)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--quick', action='store_true', help='tiny models, a few steps, few tasks; writes to /tmp')
  parser.add_argument('--quick-steps', type=int, default=20)
  parser.add_argument('--out', help='where the JSON and PNG go (default benchmarks/results)')
  parser.add_argument('--table', action='store_true', help='print the markdown table of the results in --out')
  args = parser.parse_args()
  if args.out is None:
    args.out = '/tmp/jmeta-probabilistic-quick' if args.quick else os.path.join(HERE, 'results')
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, 'probabilistic.json')
  if args.table:
    with open(path) as f:
      print(table(json.load(f)))
    return
  if args.quick:
    args.episodes, args.ambiguous_sets = min(args.episodes, 20), min(args.ambiguous_sets, 5)
  report = run(args)
  with open(path, 'w') as f:
    json.dump(report, f, indent=1)
  print(table(report))
  print(f"total {report['total_seconds']} s; matmul {report['machine']['matmul_gflops_before']} / "
        f"{report['machine']['matmul_gflops_after']} GFLOP/s; wrote {path} and probabilistic.png")


if __name__ == '__main__':
  main()
