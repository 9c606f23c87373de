"""MAML-RL on 2-D navigation beside Finn et al. (2017, arXiv:1703.03400), figure 5: return after 0-3 policy-gradient
steps on held-out goals, for MAML, the pretrained baseline, random initialisation and an oracle.

MAML (`jmeta train --algo maml-rl --dataset navigation`, its registered defaults, `--outer-lr` here) and the
pretrained baseline (the same with `--inner-steps 0`: one policy trained by PPO on the returns of all tasks, then
fine-tuned) are trained for at most `--steps` meta-iterations and `--minutes` each, resumed from `--runs` if there.
Every policy is then adapted on `--goals` held-out goals (drawn from a key no training stream uses), 20 episodes per
step: the returns of the episodes sampled before each step and after the last are its 0, 1, 2, 3-step returns (the
protocol of Finn et al.'s code). MAML steps with 0.1 then 0.05 (the paper's test-time halving); the baselines' step
sizes are tuned on as many other goals (the best mean return over steps 1-3 of a grid), as the paper tuned them by
hand. The oracle is analytic: the deterministic policy that walks straight to the goal
(`maml_rl.navigation_oracle_return`); the paper's oracle (-2.29) is a learned stochastic policy that sees the goal.

Writes `results/maml_rl.json` and `maml_rl.png` (return against adaptation steps, ours solid and the paper's dashed),
with the machine's matmul rate before and after.

    python benchmarks/maml_rl.py --outer-lr 0.01 --steps 500    # the README's figures
    python benchmarks/maml_rl.py --table                        # the README's table from the JSON
    python benchmarks/maml_rl.py --quick                        # tiny budgets, to /tmp: a smoke test
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from jmeta import experiments, models
from jmeta.envs import NavigationParams
from jmeta.evaluation import summarize
from jmeta.training import fit, read_metrics

from report import matmul_rate  # benchmarks/report.py, beside this script

mrl = importlib.import_module('jmeta.algorithms.maml_rl')
HERE = os.path.dirname(os.path.abspath(__file__))
# Finn et al. (2017), figure 5, from the authors' result files (issue 14): return after 0, 1, 2, 3 steps.
PAPER = {'maml': [-40.41, -11.68, -3.33, -3.23], 'pretrained': [-40.81, -19.73, -11.72, -8.47],
         'random': [-82.66, -57.96, -53.84, -46.81], 'oracle': [-2.29] * 4}
GRID = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0)


def train(name: str, fields: dict, args) -> tuple[experiments.Experiment, object, dict]:
  """The run `name` under `--runs`, trained (or resumed) to its `steps` within `--minutes`."""
  experiment = experiments.build(experiments.Config('maml-rl', 'navigation', **fields))
  c = experiment.config
  out_dir = os.path.join(args.runs, name)
  os.makedirs(out_dir, exist_ok=True)
  config_path = os.path.join(out_dir, 'config.json')
  if not os.path.exists(config_path):
    with open(config_path, 'w') as f:
      json.dump(c.to_json(), f, indent=2)
  state = experiments.initial_state(experiment)
  t0 = time.perf_counter()
  state = fit(experiment.learner, experiment.outer_opt, experiment.train_tasks, state, meta_batch=c.meta_batch,
              steps=c.steps, out_dir=out_dir, log_every=c.log_every, checkpoint_every=c.checkpoint_every,
              resume=True, progress=not args.quick, time_limit=60 * args.minutes, grad_of_mean=True)
  records = read_metrics(out_dir)
  flags = ' '.join(f'--{k.replace("_", "-")} {v}' if not isinstance(v, bool) else f'--{k.replace("_", "-")}'
                   for k, v in fields.items() if v is not False)
  info = dict(run_dir=os.path.relpath(out_dir, HERE) if not args.quick else None, steps=int(state.step),
              planned_steps=c.steps, this_call_s=round(time.perf_counter() - t0, 1),
              train_s=round(sum(r['elapsed_s'] for r in _segments(records)), 1),
              command=f'jmeta train --algo maml-rl --dataset navigation {flags} --out {out_dir}',
              last_record={k: v for k, v in (records[-1] if records else {}).items()})
  return experiment, state, info


def _segments(records: list[dict]) -> list[dict]:
  """The last record of each training segment (elapsed_s restarts at a resume)."""
  ends = [r for r, nxt in zip(records, records[1:] + [None]) if nxt is None or nxt['elapsed_s'] < r['elapsed_s']]
  return ends


_CURVES = {}


def curves(apply_fn, env, params, goals, keys, lr, later_scale, steps, args) -> np.ndarray:
  """Returns `[goals, steps + 1]` of `params` adapted on each goal (one compiled program for every step size)."""
  if steps not in _CURVES:
    _CURVES[steps] = jax.jit(jax.vmap(lambda p, g, k, lr, scale: mrl.adaptation_returns(
        dict(trajectories=args.trajectories, horizon=args.horizon, inner_lr=lr, later_lr_scale=scale),
        apply_fn, env, p, NavigationParams(g), k, steps), in_axes=(None, 0, 0, None, None)))
  return np.asarray(_CURVES[steps](params, goals, keys, jnp.float32(lr), jnp.float32(later_scale)))


def row(name: str, returns: np.ndarray, **extra) -> dict:
  stats = [summarize(returns[:, s]) for s in range(returns.shape[1])]
  return dict(method=name, returns=[round(s.mean, 3) for s in stats], ci95=[round(s.ci95, 3) for s in stats],
              goals=returns.shape[0], paper=PAPER.get(name), **extra)


def table(report: dict) -> str:
  lines = ['| method | 0 steps | 1 step | 2 steps | 3 steps | paper (0 / 1 / 2 / 3) | step size |',
           '|---|---|---|---|---|---|---|']
  for r in report['results']:
    cells = [f'{m:.2f} ± {c:.2f}' for m, c in zip(r['returns'], r['ci95'])]
    paper = ' / '.join(f'{v:.2f}' for v in r['paper']) if r.get('paper') else '-'
    if r['method'] == 'oracle':
      paper = f"{r['paper'][0]:.2f}"
    lr = r.get('inner_lr')
    lr = '-' if lr is None else f"{lr}" + (f" then {lr * r['later_lr_scale']:g}" if r.get('later_lr_scale', 1) != 1
                                           else '')
    lines.append(f"| {r['method']} | " + ' | '.join(cells) + f' | {paper} | {lr} |')
  return '\n'.join(lines)


def plot(report: dict, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5.6, 4.0))
  colors = {'maml': 'C3', 'maml-first-order': 'C1', 'pretrained': 'C0', 'random': 'C2', 'oracle': 'k'}
  for r in report['results']:
    x = np.arange(len(r['returns']))
    ax.errorbar(x, r['returns'], yerr=r['ci95'], color=colors.get(r['method'], 'C4'), marker='o', capsize=3,
                label=f"{r['method']} (jmeta)")
    if r.get('paper'):
      ax.plot(x, r['paper'][:len(x)], color=colors.get(r['method'], 'C4'), ls='--', marker='x',
              label=f"{r['method']} (Finn et al.)")
  low = [r['method'] for r in report['results'] if min(r['returns']) < -100]
  if low:  # a diverged run would flatten the others: keep the paper's range, name what is off scale
    ax.set_ylim(-100, 5)
  ax.set_xlabel('policy-gradient steps on the held-out goal')
  ax.set_ylabel('return per episode')
  ax.set_xticks(range(4))
  title = '2-D navigation, {} held-out goals'.format(report['results'][0]['goals'])
  ax.set_title(title + ('\n(below -100, off scale: ' + ', '.join(low) + ')' if low else ''), fontsize=9)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='tiny budgets, written under /tmp')
  parser.add_argument('--steps', type=int, default=500, help='meta-iterations of each run (the paper: up to 500)')
  parser.add_argument('--pretrained-steps', type=int, default=500, help='iterations of the pretrained policy')
  parser.add_argument('--minutes', type=float, default=15.0, help='wall-clock limit of each run in this call')
  parser.add_argument('--outer-lr', type=float, default=0.01, help="Adam's step for MAML and the pretrained policy")
  parser.add_argument('--goals', type=int, default=40, help='held-out goals (the paper: 40)')
  parser.add_argument('--adapt-steps', type=int, default=3)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--methods', nargs='*', default=['maml', 'pretrained', 'random', 'oracle'],
                      help='of maml, maml-first-order (the same run with --first-order), pretrained, random, oracle')
  parser.add_argument('--out', help='where the JSON and PNG go (default: results/, or /tmp/... with --quick)')
  parser.add_argument('--runs', help='run directories, resumed if there (default: runs/, or under --out with '
                      '--quick)')
  parser.add_argument('--tag', default='', help="appended to the run directories' and the JSON's and PNG's names")
  parser.add_argument('--replot', action='store_true', help='redraw the PNG of --out from its JSON and exit')
  parser.add_argument('--table', action='store_true', help='print the markdown table of --out and exit')
  args = parser.parse_args()
  if args.table or args.replot:
    out = args.out or os.path.join(HERE, 'results')
    with open(os.path.join(out, f'maml_rl{args.tag}.json')) as f:
      report = json.load(f)
    if args.replot:
      plot(report, os.path.join(out, f'maml_rl{args.tag}.png'))
    print(table(report))
    return
  small = {}
  args.trajectories, args.horizon = 20, 100
  if args.quick:
    args.out = args.out or '/tmp/jmeta_maml_rl_quick'
    args.runs = args.runs or os.path.join(args.out, 'runs')
    args.steps, args.goals, args.minutes = 2, 3, 2.0
    args.trajectories, args.horizon = 2, 10
    small = dict(trajectories=2, horizon=10, hidden=8, meta_batch=2, log_every=1, valid_episodes=0, eval_episodes=2)
  args.out = args.out or os.path.join(HERE, 'results')
  args.runs = args.runs or os.path.join(HERE, 'runs')
  os.makedirs(args.out, exist_ok=True)
  header = dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), jax=jax.__version__,
                command='python benchmarks/maml_rl.py ' + ' '.join(os.sys.argv[1:]),
                matmul_gflops_before=matmul_rate(args.quick), load_average_before=os.getloadavg())
  t_start = time.perf_counter()
  fields = dict(steps=args.steps, outer_lr=args.outer_lr, seed=args.seed, **small)
  test_key = jax.random.fold_in(jax.random.PRNGKey(args.seed), 7_777_777)  # no training stream uses it
  goal_key, rollout_key, tune_goal_key, tune_rollout_key = jax.random.split(test_key, 4)
  env = mrl._navigation(args.horizon)
  goals = jax.vmap(lambda k: env.sample_params(k).goal)(jax.random.split(goal_key, args.goals))
  keys = jax.random.split(rollout_key, args.goals)
  tune_goals = jax.vmap(lambda k: env.sample_params(k).goal)(jax.random.split(tune_goal_key, args.goals))
  tune_keys = jax.random.split(tune_rollout_key, args.goals)
  hidden = small.get('hidden', 100)
  module = models.MLP(hidden=(hidden, hidden), out=2)
  apply_fn = lambda p, x: module.apply({'params': p}, x)  # noqa: E731
  results, runs = [], {}

  def tuned(name, params):
    scores = {}
    for lr in (GRID[2:4] if args.quick else GRID):
      r = curves(apply_fn, env, params, tune_goals, tune_keys, lr, 1.0, args.adapt_steps, args)
      scores[lr] = float(np.mean(r[:, 1:]))
    best = max(scores, key=scores.get)
    returns = curves(apply_fn, env, params, goals, keys, best, 1.0, args.adapt_steps, args)
    return row(name, returns, inner_lr=best, later_lr_scale=1.0, tuning={str(k): round(v, 3)
                                                                          for k, v in scores.items()})

  for method in args.methods:
    t0 = time.perf_counter()
    if method == 'maml':
      _, state, runs['maml'] = train('maml-rl' + args.tag, fields, args)
      returns = curves(apply_fn, env, state.params, goals, keys, 0.1, 0.5, args.adapt_steps, args)
      r = row('maml', returns, inner_lr=0.1, later_lr_scale=0.5, **runs['maml'])
    elif method == 'maml-first-order':
      _, state, runs[method] = train('maml-rl-first-order' + args.tag, dict(fields, first_order=True), args)
      returns = curves(apply_fn, env, state.params, goals, keys, 0.1, 0.5, args.adapt_steps, args)
      r = row(method, returns, inner_lr=0.1, later_lr_scale=0.5, **runs[method])
    elif method == 'pretrained':
      pretrain = dict(fields, inner_steps=0, steps=args.pretrained_steps if not args.quick else args.steps)
      _, state, runs['pretrained'] = train('maml-rl-pretrained' + args.tag, pretrain, args)
      r = tuned('pretrained', state.params)
      r.update(runs['pretrained'])
    elif method == 'random':
      experiment = experiments.build(experiments.Config('maml-rl', 'navigation', **fields))
      params = experiments.initial_state(experiment).params  # the runs' own initialisation (seed's model stream)
      r = tuned('random', params)
    elif method == 'oracle':
      returns = np.asarray(jax.vmap(lambda g: mrl.navigation_oracle_return(g, args.horizon))(goals))
      r = row('oracle', np.repeat(returns[:, None], args.adapt_steps + 1, 1), analytic=True)
    else:
      raise ValueError(f'unknown method {method!r}; expected maml, maml-first-order, pretrained, random or oracle')
    r['eval_s'] = round(time.perf_counter() - t0 - r.get('this_call_s', 0.0), 1)
    results.append(r)
    print(f"{method}: " + ' '.join(f'{v:.2f}' for v in r['returns']), flush=True)
  header.update(matmul_gflops_after=matmul_rate(args.quick), load_average_after=os.getloadavg(),
                total_s=round(time.perf_counter() - t_start, 1), trajectories=args.trajectories, horizon=args.horizon)
  report = dict(header, results=results)
  path = os.path.join(args.out, f'maml_rl{args.tag}.json')
  with open(path, 'w') as f:
    json.dump(report, f, indent=1)
  plot(report, os.path.join(args.out, f'maml_rl{args.tag}.png'))
  print(table(report))
  print(f'wrote {path}')


if __name__ == '__main__':
  main()
