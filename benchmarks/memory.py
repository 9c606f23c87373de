"""Memory-augmented networks on Omniglot label-offset sequences beside Santoro et al. (2016), Table 1.

Each row runs `jmeta train --algo {mann,lstm} --dataset omniglot-sequences ... --time-limit MINUTES` in a
subprocess (the exact command is recorded), evaluates 1,000 test episodes of the 423 held-out characters, and
merges its record into `benchmarks/results/memory.json`: the accuracy at the 1st, 2nd, 3rd, 4th, 5th and 10th
instance of a class with 95% intervals, the paper's row, the meta-steps reached, the wall-clock time, the CPU cores
and the machine's matmul rate before and after. `memory.png` plots accuracy by instance (ours and the paper's) and
the validation accuracy at the 2nd instance over training.

The copy task of neural Turing machines (Graves et al., 2014, section 4.1) checks the NTM addressing: rows
`ntm-copy` and `lstm-copy` train an LSTM-controlled NTM (128 x 20 memory, one read and one write head) and an LSTM
of about as many parameters on 8-bit sequences of lengths 1 to 20, in this process, then count the bits written
wrong per sequence on 1,000 sequences of length 10, 20 and 40.

    python benchmarks/memory.py --rows mann-5 lstm-5          # 60 minutes each
    python benchmarks/memory.py --rows ntm-copy lstm-copy --minutes 20
    python benchmarks/memory.py --table                       # the README tables from the JSON
    python benchmarks/memory.py --plot                        # memory.png from the JSON
    python benchmarks/memory.py --profile-step                # one meta-step's parts: memory_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from report import matmul_rate, merge as merge_report, run_train  # benchmarks/report.py, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
INSTANCES = (1, 2, 3, 4, 5, 10)
# Santoro et al. (2016), Table 1: 5 classes, one-hot labels, accuracy (%) at each instance.
PAPER = {'mann': (36.4, 82.8, 91.0, 92.6, 94.9, 98.1), 'lstm': (24.4, 49.5, 55.3, 61.0, 63.6, 62.5)}
ROWS = {'mann-5': ('mann', 5), 'lstm-5': ('lstm', 5), 'mann-5-strength': ('mann', 5)}
EXTRA = {'mann-5-strength': ['--learn-strength']}
LABELS = {'mann-5': 'MANN', 'lstm-5': 'LSTM', 'mann-5-strength': 'MANN, learned read strength'}
"""Rows that differ from the paper's model: `mann-5-strength` sharpens LRUA reads by a learned strength."""
COPY_ROWS = ('ntm-copy', 'lstm-copy')
COPY_LENGTHS = (10, 20, 40)
# Adam at 1e-3 instead of the paper's RMSProp at 1e-4: the budget allows about a fifth of the paper's 100,000
# episodes, and Adam at 1e-3 is what the public reimplementations train with.
RECIPE = ['--outer-opt', 'adam', '--outer-lr', '1e-3', '--log-every', '100', '--eval-every', '1000',
          '--valid-episodes', '200', '--eval-episodes', '1000']


def command(algo: str, ways: int, out: str, minutes: float, quick: bool, extra=()) -> list[str]:
  cmd = ['jmeta', 'train', '--algo', algo, '--dataset', 'omniglot-sequences', '--ways', str(ways), *extra]
  if quick:
    cmd += ['--hidden', '16', '--steps', '4', '--log-every', '2', '--valid-episodes', '0', '--eval-episodes', '20',
            '--meta-batch', '2', '--shots', '3']
    if algo == 'mann':
      cmd += ['--slots', '8', '--width', '4', '--heads', '1']
  else:
    cmd += RECIPE
  return cmd + ['--time-limit', f'{minutes:g}', '--no-progress', '--out', out]


def run_row(name: str, args: argparse.Namespace) -> dict:
  algo, ways = ROWS[name]
  out = os.path.join(args.runs, name)
  cmd = command(algo, ways, out, args.minutes, args.quick, EXTRA.get(name, ()))
  run = run_train(cmd, out, args.resume)
  row = {'row': name, 'algo': algo, 'ways': ways, 'command': ' '.join(cmd),
         'paper': dict(zip(map(str, INSTANCES), PAPER[algo])), 'budget_minutes': args.minutes, **run.facts}
  if run.result is None:
    return row
  result, records, config = run.result, run.records, run.config
  curve = [{'step': r['step'], 'elapsed_s': r['elapsed_s'],
            **{str(k): r[f'valid_instance_{k}'] for k in INSTANCES if f'valid_instance_{k}' in r}}
           for r in records if 'valid_accuracy' in r]
  return {**row, 'accuracy': result['accuracy'], 'ci95': result['ci95'], 'episodes': result['episodes'],
          'by_instance': {str(k): result[f'instance_{k}'] for k in INSTANCES},
          'by_instance_ci95': {str(k): result[f'instance_{k}_ci95'] for k in INSTANCES},
          'meta_steps': records[-1]['step'], 'train_seconds': records[-1]['elapsed_s'], 'validation': curve,
          'config': config}


def copy_model(name: str, quick: bool):
  from jmeta.models.recurrent import LSTMClassifier, MANNClassifier
  hidden = 8 if quick else 100
  if name == 'ntm-copy':  # Graves et al.'s copy task: 128 x 20 memory, one read and one write head.
    return MANNClassifier(8, hidden=hidden, slots=16 if quick else 128, width=4 if quick else 20, heads=1,
                          addressing='ntm')
  return LSTMClassifier(8, hidden=hidden + (2 if quick else 20))  # about the NTM's number of parameters


def run_copy_row(name: str, args: argparse.Namespace) -> dict:
  """Trains on lengths 1-20 for `args.minutes` (batch 16, Adam 1e-3, gradients clipped to norm 10), in chunks of
  100 steps, then counts bits written wrong on 1,000 sequences of each length in `COPY_LENGTHS`."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from jmeta.datasets import copy_task
  module = copy_model(name, args.quick)
  longest = 4 if args.quick else 20
  sample = copy_task.copy_sequences(8, (1, longest))
  none = jnp.zeros((0,), jnp.float32)
  step_fn = lambda params, carry, x: module.apply(params, carry, x, none)
  carry0 = module.initial_carry()
  params = module.init(jax.random.PRNGKey(0), carry0, jnp.zeros((9,)), none)
  size = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  opt = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(1e-3))

  def mean_loss(params, batch):
    return jnp.mean(jax.vmap(lambda t: copy_task.copy_loss(copy_task.run(step_fn, params, carry0, t), t))(batch))

  @jax.jit
  def chunk(params, opt_state, key):
    def body(carry, key):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(mean_loss)(params, jax.vmap(sample)(jax.random.split(key, 16)))
      updates, opt_state = opt.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss
    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), jax.random.split(key, 100))
    return params, opt_state, jnp.mean(losses)

  rate_before = matmul_rate()
  opt_state, key, steps, curve = opt.init(params), jax.random.PRNGKey(1), 0, []
  start = time.perf_counter()
  while time.perf_counter() - start < 60 * args.minutes:
    key, sub = jax.random.split(key)
    params, opt_state, loss = chunk(params, opt_state, sub)
    steps += 100
    curve.append({'step': steps, 'loss': float(loss), 'elapsed_s': round(time.perf_counter() - start, 1)})
  seconds = time.perf_counter() - start
  errors = {}
  for length in COPY_LENGTHS:
    fixed = copy_task.copy_sequences(8, (length, length))
    count = 50 if args.quick else 1000

    @jax.jit
    def score(params, keys):
      return jax.vmap(lambda t: copy_task.bit_errors(copy_task.run(step_fn, params, carry0, t), t))(
          jax.vmap(fixed)(keys))
    values = np.asarray(score(params, jax.random.split(jax.random.PRNGKey(2 + length), count)))
    errors[str(length)] = {'mean': float(values.mean()), 'ci95': float(1.96 * values.std(ddof=1) / count ** 0.5),
                           'perfect': float(np.mean(values == 0))}
  return {'row': name, 'parameters': size, 'hidden': module.hidden, 'budget_minutes': args.minutes,
          'train_seconds': round(seconds, 1), 'meta_steps': steps, 'batch': 16, 'sequences': 16 * steps,
          'train_lengths': [1, longest], 'bit_errors': errors, 'curve': curve[::max(1, len(curve) // 100)],
          'matmul_gflops_before': rate_before, 'matmul_gflops_after': matmul_rate(),
          'cores': len(os.sched_getaffinity(0)), 'recipe': 'batch 16, Adam 1e-3, clip_by_global_norm 10'}


def profile_step(repeats: int = 20) -> dict:
  """Milliseconds of one meta-batch of 16 Omniglot-size episodes (50 steps of 20x20 images, 5 classes) for MANN
  and LSTM at the paper's sizes: the forward loss, the per-episode gradients averaged (`meta_step`'s default) and
  the gradient of the mean loss (`grad_of_mean=True`), each the best of 3 rounds of `repeats` calls."""
  import jax
  import jax.numpy as jnp
  from jmeta.algorithms.mann import init_params, mann
  from jmeta.models.recurrent import LSTMClassifier, MANNClassifier
  from jmeta.sequences import SequenceTask, shifted_labels

  def best_ms(fn, *args):
    jax.block_until_ready(fn(*args))
    rounds = []
    for _ in range(3):
      t0 = time.perf_counter()
      for _ in range(repeats):
        out = fn(*args)
      jax.block_until_ready(out)
      rounds.append((time.perf_counter() - t0) / repeats * 1e3)
    return round(min(rounds), 2)

  x = jax.random.uniform(jax.random.PRNGKey(0), (16, 50, 20, 20, 1))
  y = jax.random.randint(jax.random.PRNGKey(1), (16, 50), 0, 5)
  batch = SequenceTask(x, y, jax.vmap(lambda labels: shifted_labels(labels, 5))(y))
  out = {'matmul_gflops_before': matmul_rate(), 'meta_batch': 16, 'steps': 50, 'repeats': repeats}
  for name, module in (('mann', MANNClassifier(5)), ('lstm', LSTMClassifier(5))):
    learner = mann(module)
    params = init_params(module, jax.random.PRNGKey(2), x[0, 0])

    def mean_loss(params, batch):
      return jnp.mean(jax.vmap(learner.loss, in_axes=(None, 0))(params, batch)[0])

    per_task = jax.jit(lambda p, b: jax.tree.map(lambda g: jnp.mean(g, 0),
                                                 jax.vmap(learner.meta_grad, in_axes=(None, 0))(p, b)[0]))
    out[name] = {'forward_ms': best_ms(jax.jit(mean_loss), params, batch),
                 'per_task_grads_ms': best_ms(per_task, params, batch),
                 'grad_of_mean_ms': best_ms(jax.jit(jax.grad(mean_loss)), params, batch)}
  out['matmul_gflops_after'] = matmul_rate()
  return out


def merge(path: str, rows: list[dict], header: dict) -> dict:
  """Replaces `rows` (by row name) in the report at `path`, sorted by name, and returns the report."""
  return merge_report(path, rows, header, lambda r: r['row'])


def copy_table(report: dict) -> str:
  lines = ['| model | parameters | sequences trained | training min | bits wrong per sequence, length 10 | 20 | 40 '
           '(longer than trained) | matmul GFLOP/s |', '|---' * 8 + '|']
  for r in report['results']:
    if 'bit_errors' not in r:
      continue
    errors = ' | '.join(f"{r['bit_errors'][str(n)]['mean']:.2f} ± {r['bit_errors'][str(n)]['ci95']:.2f}"
                        for n in COPY_LENGTHS)
    lines.append(f"| {r['row'].split('-')[0].upper()} | {r['parameters']:,} | {r['sequences']:,} | "
                 f"{r['train_seconds'] / 60:.0f} | {errors} | {r['matmul_gflops_before']:.0f} / "
                 f"{r['matmul_gflops_after']:.0f} |")
  return '\n'.join(lines)


def table(report: dict) -> str:
  head = ' | '.join(f'{k}{"st" if k == 1 else "nd" if k == 2 else "rd" if k == 3 else "th"}' for k in INSTANCES)
  lines = [f'| model | {head} | episodes trained | training min | matmul GFLOP/s before / after |',
           '|---' * (len(INSTANCES) + 4) + '|']
  rows = [r for r in report['results'] if r['row'] in ROWS]
  for r in sorted(rows, key=lambda r: list(ROWS).index(r['row'])):
    if r['row'] not in EXTRA:
      paper = ' | '.join(f'{v:.1f}' for v in PAPER[r['algo']])
      lines.append(f"| {LABELS[r['row']]} (Santoro et al.) | {paper} | 100,000 | - | - |")
    if 'error' in r:
      lines.append(f"| {LABELS[r['row']]} (jmeta) | {r['error']} |")
      continue
    ours = ' | '.join(f"{100 * r['by_instance'][str(k)]:.1f} ± {100 * r['by_instance_ci95'][str(k)]:.1f}"
                      for k in INSTANCES)
    episodes = r['meta_steps'] * r['config']['meta_batch']
    lines.append(f"| {LABELS[r['row']]} (jmeta) | {ours} | {episodes:,} | {r['train_seconds'] / 60:.0f} | "
                 f"{r['matmul_gflops_before']:.0f} / {r['matmul_gflops_after']:.0f} |")
  return '\n'.join(lines)


def plot(report: dict, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  rows = [r for r in report['results'] if r['row'] in ROWS]
  for r, color in zip(sorted(rows, key=lambda r: list(ROWS).index(r['row'])), ('C0', 'C1', 'C2', 'C3')):
    name = LABELS[r['row']]
    if r['row'] not in EXTRA:
      left.plot(INSTANCES, PAPER[r['algo']], '--', color=color, label=f'{name}, Santoro et al.')
    if 'by_instance' in r:
      left.errorbar(INSTANCES, [100 * r['by_instance'][str(k)] for k in INSTANCES],
                    yerr=[100 * r['by_instance_ci95'][str(k)] for k in INSTANCES], color=color, marker='o',
                    label=f'{name}, jmeta')
      curve = r['validation']
      for k, style in ((1, ':'), (2, '-'), (5, '-.')):
        right.plot([c['step'] * r['config']['meta_batch'] for c in curve], [100 * c[str(k)] for c in curve], style,
                   color=color, label=f'{name}, instance {k}')
  left.set(xlabel='instance of the class in the episode', ylabel='test accuracy (%)', xticks=INSTANCES,
           title='Omniglot, 5 classes, one-hot labels')
  right.set(xlabel='training episodes', ylabel='validation accuracy (%)', title='during training')
  for ax in (left, right):
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rows', nargs='+', default=sorted(ROWS) + list(COPY_ROWS),
                      choices=sorted(ROWS) + list(COPY_ROWS))
  parser.add_argument('--minutes', type=float, default=60.0, help='training budget of each row (default 60)')
  parser.add_argument('--resume', action='store_true', help='continue each row\'s run in --runs')
  parser.add_argument('--quick', action='store_true', help='tiny models and budgets: checks the harness only')
  parser.add_argument('--runs', default=os.path.join(os.path.expanduser('~'), '.cache', 'jmeta', 'runs'))
  parser.add_argument('--out', default=os.path.join(HERE, 'results'))
  parser.add_argument('--table', action='store_true', help='print the markdown table of the results in --out')
  parser.add_argument('--plot', action='store_true', help='redraw memory.png from the results in --out')
  parser.add_argument('--profile-step', action='store_true',
                      help='time one meta-batch of MANN and LSTM three ways; writes memory_step.json in --out')
  args = parser.parse_args()
  path = os.path.join(args.out, 'memory.json')
  if args.profile_step:
    result = profile_step()
    with open(os.path.join(args.out, 'memory_step.json'), 'w') as f:
      json.dump(result, f, indent=1)
    print(json.dumps(result))
    return
  if args.plot:
    with open(path) as f:
      plot(json.load(f), os.path.join(args.out, 'memory.png'))
    return
  if args.table:
    with open(path) as f:
      report = json.load(f)
    print(table(report) + '\n\n' + copy_table(report))
    return
  os.makedirs(args.out, exist_ok=True)
  import jax
  header = {'benchmark': 'memory', 'quick': args.quick,
            'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(), 'backend': jax.default_backend(),
                        'jax': jax.__version__}}
  for name in args.rows:
    r = run_copy_row(name, args) if name in COPY_ROWS else run_row(name, args)
    report = merge(path, [r], header)
    if name in COPY_ROWS:
      print(f"{name}: bits wrong {r['bit_errors']} after {r['meta_steps']} steps", flush=True)
    else:
      print(r.get('error') or f"{name}: by instance {r['by_instance']} after {r['meta_steps']} steps "
            f"({r['train_seconds']:.0f} s)", flush=True)
  plot(report, os.path.join(args.out, 'memory.png'))
  print(table(report) + '\n\n' + copy_table(report))


if __name__ == '__main__':
  main()
