"""RL^2 on Bernoulli bandits beside the classical baselines of Duan et al. (2016, arXiv:1611.02779), Table 1.

Tasks: k arms, each paying 1 with a probability U[0, 1] drawn per task, trials of n pulls. For every (k, n) in
{5, 10, 50} x {10, 100, 500} the baselines (`jmeta.bandits`: Thompson sampling, UCB1, epsilon-greedy, with random
and greedy as epsilon-greedy at epsilon 1 and 0, and the finite-horizon Gittins index where its table fits,
n <= `--gittins-max`) act on the same `--tasks` sampled tasks with the same rollout keys; UCB1's scale c and
epsilon-greedy's epsilon are tuned on as many other tasks (the best of a grid), as Duan et al. tuned their
baselines. RL^2 (`jmeta train --algo rl2 --dataset bandit`, its registered defaults) is trained for each setting of
`--rl2` for at most `--minutes` of wall-clock and scored on the same tasks and keys. Each row gives the total
reward per trial with a 95% interval over tasks.

Writes `results/meta_rl.json` (rows merged by name) and `meta_rl.png` (reward per pull against the pull number, RL^2
and the baselines, for each RL^2 setting), with the machine's matmul rate before and after.

    python benchmarks/meta_rl.py                   # baselines everywhere; RL^2 at k5n10 k10n10 k5n100 k10n100
    python benchmarks/meta_rl.py --rl2 k5n10 --pulls 10 --arms 5 --minutes 5   # one setting
    python benchmarks/meta_rl.py --quick           # tiny budgets, to /tmp: a smoke test
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from jmeta import bandits, experiments
from jmeta.algorithms.rl2 import trial_split
from jmeta.envs import bernoulli_bandit, rollout
from jmeta.evaluation import summarize
from jmeta.training import fit

from report import matmul_rate  # benchmarks/report.py, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
ARMS = (5, 10, 50)
PULLS = (10, 100, 500)
POLICIES = ('thompson', 'ucb1', 'epsilon_greedy', 'gittins')
UCB_SCALES = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
EPSILONS = (0.0, 0.01, 0.05, 0.1, 0.2, 1.0)
# Duan et al. (2016), Table 1: total reward per trial, typed from the paper as recalled (not re-checked offline).
PAPER = {
    (5, 10): dict(random=5.0, gittins=6.6, thompson=5.7, ucb1=6.7, epsilon_greedy=6.6, greedy=6.6, rl2=6.7),
    (10, 10): dict(random=5.0, gittins=6.6, thompson=5.5, ucb1=6.7, epsilon_greedy=6.6, greedy=6.6, rl2=6.7),
    (50, 10): dict(random=5.1, gittins=6.5, thompson=5.2, ucb1=6.6, epsilon_greedy=6.5, greedy=6.5, rl2=6.8),
    (5, 100): dict(random=49.9, gittins=78.3, thompson=74.7, ucb1=78.0, epsilon_greedy=75.4, greedy=74.8, rl2=78.7),
    (10, 100): dict(random=49.9, gittins=82.8, thompson=76.7, ucb1=82.4, epsilon_greedy=77.4, greedy=77.1,
                    rl2=83.5),
    (50, 100): dict(random=49.8, gittins=85.2, thompson=64.5, ucb1=84.3, epsilon_greedy=78.3, greedy=78.0,
                    rl2=84.9),
    (5, 500): dict(random=249.8, gittins=405.8, thompson=402.0, ucb1=405.8, epsilon_greedy=388.2, greedy=380.6,
                   rl2=401.6),
    (10, 500): dict(random=249.0, gittins=437.8, thompson=429.5, ucb1=437.1, epsilon_greedy=408.0, greedy=395.0,
                    rl2=432.5),
    (50, 500): dict(random=249.6, gittins=463.7, thompson=427.2, ucb1=457.6, epsilon_greedy=413.6, greedy=402.8,
                    rl2=438.9),
}


def _setting(name: str) -> tuple[int, int]:
  match = re.fullmatch(r'k(\d+)n(\d+)', name)
  if not match:
    raise ValueError(f'an RL^2 setting is k<arms>n<pulls>, e.g. k5n10; got {name!r}')
  return int(match.group(1)), int(match.group(2))


def _tasks(arms: int, count: int, seed: int):
  """`count` tasks of `arms` arms and one rollout key each, the same for every policy (and independent of `seed`'s
  training streams)."""
  env = bernoulli_bandit(arms)
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 1000 * arms)
  task_key, rollout_key = jax.random.split(key)
  tasks = jax.vmap(env.sample_params)(jax.random.split(task_key, count))
  return env, tasks, jax.random.split(rollout_key, count)


def _baseline_rewards(env, policy, arms: int, pulls: int):
  """A jitted `(policy_params [P, ...], tasks, keys) -> rewards [P, tasks, pulls]`: every parameter value of a
  grid in one compiled program."""

  def one(pp, task, key):
    return rollout(env, policy, pp, task, key, steps=pulls, carry=bandits.initial_counts(arms)).reward

  return jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0, 0)), in_axes=(0, None, None)))


def _row(name: str, rewards: np.ndarray, **extra) -> dict:
  s = summarize(rewards.sum(axis=1))
  return dict(row=name, reward=round(s.mean, 3), ci95=round(s.ci95, 3), tasks=s.episodes,
              per_pull=[round(float(v), 4) for v in rewards.mean(axis=0)], **extra)


@functools.lru_cache(maxsize=None)
def _gittins_table(pulls: int, grid: int) -> np.ndarray:
  return bandits.gittins_table(pulls, grid=grid)


def baselines(arms: int, pulls: int, args) -> tuple[list[dict], dict]:
  env, tasks, keys = _tasks(arms, args.tasks, args.seed)
  _, tune_tasks, tune_keys = _tasks(arms, args.tasks, args.seed + 1)
  rows, seconds = [], {}
  prefix = f'k{arms}n{pulls}'
  # Random (epsilon 1) and greedy (epsilon 0) are rows of epsilon-greedy's grid: one compiled program for three.
  for name, policy, grid in [p for p in (('thompson', bandits.thompson_policy, (0.0,)),
                                         ('ucb1', bandits.ucb1_policy, UCB_SCALES),
                                         ('epsilon_greedy', bandits.epsilon_greedy_policy, EPSILONS))
                             if p[0] in args.policies]:
    t0 = time.perf_counter()
    run = _baseline_rewards(env, policy, arms, pulls)
    grid_arr = jnp.asarray(grid, jnp.float32)
    choice = {}
    tunable = [i for i, v in enumerate(grid) if name != 'epsilon_greedy' or 0 < v < 1]
    if len(tunable) > 1:
      tuned = np.asarray(run(grid_arr, tune_tasks, tune_keys)).sum(-1).mean(-1)[tunable]
      best = tunable[int(np.argmax(tuned))]
      choice = {'tuned': grid[best], 'grid': [grid[i] for i in tunable],
                'tuning_rewards': [round(float(v), 3) for v in tuned]}
    rewards = np.asarray(run(grid_arr, tasks, keys))
    if name == 'epsilon_greedy':
      rows.append(_row(f'{prefix}-random', rewards[grid.index(1.0)], arms=arms, pulls=pulls, policy='random',
                       epsilon=1.0, paper=PAPER.get((arms, pulls), {}).get('random')))
      rows.append(_row(f'{prefix}-greedy', rewards[grid.index(0.0)], arms=arms, pulls=pulls, policy='greedy',
                       epsilon=0.0, paper=PAPER.get((arms, pulls), {}).get('greedy')))
    chosen = rewards[grid.index(choice['tuned']) if choice else 0]
    rows.append(_row(f'{prefix}-{name}', chosen, arms=arms, pulls=pulls, policy=name,
                     paper=PAPER.get((arms, pulls), {}).get(name), **choice))
    if name == 'ucb1':  # Auer et al.'s c = 1 as well
      rows.append(_row(f'{prefix}-ucb1_c1', rewards[grid.index(1.0)], arms=arms, pulls=pulls, policy='ucb1',
                       c=1.0, paper=None))
    seconds[name] = round(time.perf_counter() - t0, 1)
  if pulls <= args.gittins_max and 'gittins' in args.policies:
    t0 = time.perf_counter()
    table = _gittins_table(pulls, args.gittins_grid)
    table_s = time.perf_counter() - t0
    run = _baseline_rewards(env, bandits.gittins_policy(table), arms, pulls)
    rewards = np.asarray(run(jnp.zeros((1,)), tasks, keys))[0]
    rows.append(_row(f'{prefix}-gittins', rewards, arms=arms, pulls=pulls, policy='gittins',
                     paper=PAPER.get((arms, pulls), {}).get('gittins'), grid=args.gittins_grid,
                     index='finite-horizon Gittins index, Beta(1, 1) prior', table_s=round(table_s, 1)))
    seconds['gittins'] = round(time.perf_counter() - t0, 1)
  return rows, seconds


def train_rl2(arms: int, pulls: int, args) -> dict:
  """RL^2 with its registered defaults (`--rl2-fields` override), trained for at most `--minutes`, scored on the
  baselines' tasks and keys."""
  fields = dict(arms=arms, pulls=pulls, seed=args.seed, valid_episodes=0, **args.rl2_fields)
  if args.quick:
    fields.update(hidden=8, steps=4, log_every=2, meta_batch=4)
  experiment = experiments.build(experiments.Config('rl2', 'bandit', **fields))
  c = experiment.config
  state = experiments.initial_state(experiment)
  out_dir = os.path.join(args.runs, f'rl2-k{arms}n{pulls}')
  t0 = time.perf_counter()
  state = fit(experiment.learner, experiment.outer_opt, experiment.train_tasks, state, meta_batch=c.meta_batch,
              steps=c.steps, out_dir=out_dir, log_every=c.log_every, checkpoint_every=c.checkpoint_every,
              resume=True, progress=not args.quick, time_limit=60 * args.minutes, grad_of_mean=True)
  train_s = time.perf_counter() - t0
  _, tasks, keys = _tasks(arms, args.tasks, args.seed)
  score = jax.jit(jax.vmap(
      lambda task, key: experiment.learner.predict(state.params, trial_split(key[None], task).x)[0]))
  rewards = np.concatenate([np.asarray(score(jax.tree.map(lambda a: a[i:i + 250], tasks), keys[i:i + 250]))
                            for i in range(0, args.tasks, 250)])
  return _row(f'k{arms}n{pulls}-rl2', rewards, arms=arms, pulls=pulls, policy='rl2',
              paper=PAPER.get((arms, pulls), {}).get('rl2'), steps=int(state.step), planned_steps=c.steps,
              train_s=round(train_s, 1), config={k: v for k, v in c.to_json().items()
                                                 if k in ('hidden', 'meta_batch', 'outer_lr', 'discount',
                                                          'gae_lambda', 'entropy_coef', 'steps')},
              run_dir=os.path.relpath(out_dir, HERE) if not args.quick else None)


def plot(report: dict, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  rows = {r['row']: r for r in report['results']}
  settings = sorted({(r['arms'], r['pulls']) for r in report['results'] if r['policy'] == 'rl2'},
                    key=lambda s: (s[1], s[0]))
  if not settings:
    return
  fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.4), squeeze=False)
  for ax, (k, n) in zip(axes[0], settings):
    for policy, style in (('rl2', dict(color='k', lw=2)), ('gittins', dict(color='C3')),
                          ('thompson', dict(color='C0')),
                          ('ucb1', dict(color='C2')), ('epsilon_greedy', dict(color='C1')),
                          ('random', dict(color='0.6', ls=':'))):
      r = rows.get(f'k{k}n{n}-{policy}')
      if r is None:
        continue
      curve = np.asarray(r['per_pull'])
      if n > 20:  # a moving average over 5 pulls
        curve = np.convolve(curve, np.ones(5) / 5, mode='valid')
      ax.plot(np.arange(1, len(curve) + 1), curve, label=f'{policy} {r["reward"]:.2f}', **style)
    ax.set_title(f'k = {k}, n = {n}')
    ax.set_xlabel('pull')
    ax.set_ylabel('mean reward per pull')
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def table(report: dict) -> str:
  """The markdown table of a report: one line per (k, n), total reward per trial with its 95% interval (the
  paper's figure in brackets)."""
  policies = ('random', 'gittins', 'thompson', 'ucb1', 'epsilon_greedy', 'greedy', 'rl2')
  rows = {r['row']: r for r in report['results']}
  lines = ['| k | n | ' + ' | '.join(policies) + ' |', '|---|---|' + '---|' * len(policies)]
  for k, n in sorted({(r['arms'], r['pulls']) for r in report['results']}, key=lambda s: (s[1], s[0])):
    cells = []
    for p in policies:
      r = rows.get(f'k{k}n{n}-{p}')
      cells.append('-' if r is None else f"{r['reward']:.2f} ± {r['ci95']:.2f}" +
                   (f" ({r['paper']})" if r.get('paper') is not None else ''))
    lines.append(f'| {k} | {n} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='tiny budgets, written under /tmp')
  parser.add_argument('--rl2', nargs='*', default=['k5n10', 'k10n10', 'k5n100', 'k10n100'],
                      help='RL^2 settings k<arms>n<pulls> to train (none: baselines only)')
  parser.add_argument('--minutes', type=float, default=3.5, help='wall-clock limit of each RL^2 run')
  parser.add_argument('--tasks', type=int, default=2000, help='test tasks per setting (and as many for tuning)')
  parser.add_argument('--arms', type=int, nargs='*', default=list(ARMS))
  parser.add_argument('--pulls', type=int, nargs='*', default=list(PULLS))
  parser.add_argument('--policies', nargs='*', default=list(POLICIES), help='baselines to run')
  parser.add_argument('--gittins-max', type=int, default=100, help='largest n with a Gittins table')
  parser.add_argument('--gittins-grid', type=int, default=2001, help='retirement rewards in the calibration grid')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--rl2-fields', type=json.loads, default={}, help='JSON of rl2 config fields to override')
  parser.add_argument('--out', help='where the JSON and PNG go (default: results/, or /tmp/... with --quick)')
  parser.add_argument('--runs', help='RL^2 run directories, resumed if there (default: runs/, or under --out with '
                      '--quick)')
  parser.add_argument('--table', action='store_true', help='print the markdown table of --out and exit')
  args = parser.parse_args()
  if args.table:
    with open(os.path.join(args.out or os.path.join(HERE, 'results'), 'meta_rl.json')) as f:
      print(table(json.load(f)))
    return
  if args.quick:
    args.out = args.out or '/tmp/jmeta_meta_rl_quick'
    args.runs = args.runs or os.path.join(args.out, 'runs')
    args.tasks, args.arms, args.pulls, args.gittins_grid, args.minutes = 20, [3], [5], 101, 1.0
    args.rl2, args.policies = ['k3n5'], ['epsilon_greedy', 'gittins']
  args.out = args.out or os.path.join(HERE, 'results')
  args.runs = args.runs or os.path.join(HERE, 'runs')
  os.makedirs(args.out, exist_ok=True)
  header = dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), jax=jax.__version__,
                matmul_gflops_before=matmul_rate(args.quick))
  from report import merge
  path = os.path.join(args.out, 'meta_rl.json')
  header['command'] = 'python benchmarks/meta_rl.py ' + ' '.join(os.sys.argv[1:])
  earlier = []  # each run's command and matmul rates, kept beside the rows it wrote
  if os.path.exists(path):
    with open(path) as f:
      earlier = json.load(f).get('runs', [])
  order = lambda r: (r['pulls'], r['arms'], r['row'])  # noqa: E731
  rows, seconds = [], {}
  for n in args.pulls:
    for k in args.arms:
      got, secs = baselines(k, n, args)
      rows += got
      seconds[f'k{k}n{n}'] = secs
      print(f'k={k} n={n}: ' + ', '.join(f'{r["policy"]} {r["reward"]:.2f}' for r in got), flush=True)
  merge(path, rows, {**header, 'baseline_seconds': seconds}, order)  # each stage saved as it ends
  for name in args.rl2:
    k, n = _setting(name)
    row = train_rl2(k, n, args)
    rows.append(row)
    merge(path, [row], {**header, 'baseline_seconds': seconds}, order)
    print(f'{name}: rl2 {row["reward"]:.2f} +- {row["ci95"]:.2f} after {row["steps"]} steps, {row["train_s"]} s',
          flush=True)
  header['matmul_gflops_after'] = matmul_rate(args.quick)
  this_run = {k: header[k] for k in ('command', 'matmul_gflops_before', 'matmul_gflops_after')}
  this_run['rows'] = [r['row'] for r in rows]
  report = merge(path, [], {**header, 'baseline_seconds': seconds, 'runs': earlier + [this_run]}, order)
  plot(report, os.path.join(args.out, 'meta_rl.png'))
  print(f'wrote {path}')


if __name__ == '__main__':
  main()
