"""XLA:CPU's compile settings: compile and step times with XLA's defaults (LLVM at -O3, the MLIR fusion emitters),
at -O1, and at -O1 with the older fusion emitters (`jmeta.runtime.tune_xla_compile`, which the tests apply).

Each (round, setting) is a fresh process, the settings in turn, reversed every other round, since this host's
speed drifts between minutes. Each process compiles conv4's `init` (16 filters, 2 blocks, 28x28: mostly
threefry, the kind of small program the tests compile by the hundred) and times the `jmeta bench` cases'
meta-steps: their small `--quick` forms, or with `--full` the full-size cases, as `jmeta bench` runs them.

    python benchmarks/compile_level.py                # -> results/compile_level.json and a table
    python benchmarks/compile_level.py --full --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from jmeta.runtime import FAST_COMPILE_FLAGS

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = {'O3': '', 'O1': '--xla_backend_optimization_level=1',  # O1-legacy: what tune_xla_compile adds
            'O1-legacy': ' '.join(f'{name}={value}' for name, value in FAST_COMPILE_FLAGS.items())}
CASES = ('maml2_omniglot_5w1s', 'protonet_omniglot_60w5s')


def _child(names: list[str], full: bool, steps: int) -> dict:
  import jax
  import jax.numpy as jnp

  from jmeta.bench import cases, timing
  from jmeta.models import conv4
  from jmeta.runtime import tune_malloc
  tune_malloc()
  init = conv4.functional(conv4.Conv4(16, 2, strides=1, pool_blocks=2)).init
  lowered = init.lower(jax.random.PRNGKey(0), jnp.zeros((5, 28, 28, 1)))
  t0 = time.perf_counter()
  lowered.compile()
  rows = [{'program': 'conv4_init', 'compile_s': time.perf_counter() - t0}]
  for name in names:
    case = cases.CASES[name] if full else cases.quick(cases.CASES[name])
    record = timing.measure(case, 'jmeta', steps)
    rows.append({'program': name + ('' if full else '_quick'), 'compile_s': record['compile_s'],
                 'median_ms': record['median_ms']})
  return {'xla_flags': os.environ.get('XLA_FLAGS', ''), 'rows': rows}


def _run(setting: str, names: list[str], full: bool, steps: int) -> dict:
  env = {**os.environ, 'XLA_FLAGS': SETTINGS[setting]}
  argv = ['--child', '--steps', str(steps), '--cases', *names] + (['--full'] if full else [])
  done = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True, check=True)
  return json.loads(done.stdout.strip().splitlines()[-1])


def table(report: dict) -> str:
  """Markdown: per program and setting, the median over rounds of compile seconds and step milliseconds."""
  lines = ['| program | setting | compile s | step ms | rounds |', '|---|---|---|---|---|']
  programs = [r['program'] for r in report['runs'][0]['rows']]
  for program in programs:
    for setting in dict.fromkeys(run['setting'] for run in report['runs']):
      rows = [row for run in report['runs'] if run['setting'] == setting for row in run['rows']
              if row['program'] == program]
      step = [r['median_ms'] for r in rows if 'median_ms' in r]
      step_text = f'{statistics.median(step):.1f}' if step else '-'
      lines.append(f"| {program} | {setting} | {statistics.median(r['compile_s'] for r in rows):.2f} | {step_text} | "
                   f'{len(rows)} |')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rounds', type=int, default=3, help='fresh processes per setting, in turn')
  parser.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=SETTINGS, metavar='SETTING',
                      help=f'which to compare (default: all of {" ".join(SETTINGS)})')
  parser.add_argument('--full', action='store_true', help="the full-size cases, not their --quick forms")
  parser.add_argument('--steps', type=int, default=10, help='timed meta-steps per case')
  parser.add_argument('--cases', nargs='*', default=list(CASES), choices=CASES, metavar='CASE',
                      help=f'`jmeta bench` cases to time (default: {" ".join(CASES)}; none: conv4 init only)')
  parser.add_argument('--out', default=os.path.join(HERE, 'results'))
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(_child(args.cases, args.full, args.steps)))
    return
  from jmeta.bench.timing import matmul_gflops
  report = {'benchmark': 'compile_level', 'full': args.full, 'steps': args.steps,
            'command': 'python benchmarks/compile_level.py' + (' --full' if args.full else '') +
            f' --rounds {args.rounds} --steps {args.steps} --settings {" ".join(args.settings)}'
            f' --cases {" ".join(args.cases)}'.rstrip(),
            'matmul_gflops_before': matmul_gflops(), 'runs': []}
  for round_ in range(args.rounds):
    order = args.settings if round_ % 2 == 0 else args.settings[::-1]
    for setting in order:
      report['runs'].append({'round': round_, 'setting': setting, **_run(setting, args.cases, args.full, args.steps)})
  report['matmul_gflops_after'] = matmul_gflops()
  os.makedirs(args.out, exist_ok=True)
  name = 'compile_level_full.json' if args.full else 'compile_level.json'
  with open(os.path.join(args.out, name), 'w') as f:
    json.dump(report, f, indent=1)
  print(f"matmul {report['matmul_gflops_before']['best']:.0f} / {report['matmul_gflops_after']['best']:.0f} GFLOP/s")
  print(table(report))


if __name__ == '__main__':
  main()
