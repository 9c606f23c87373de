"""Where a benchmark case's meta-step spends its time: a `jax.profiler` trace of a few steps, its events summed by
XLA instruction and grouped by what the instruction does (matmul, patch copies, reductions, ...).

    python benchmarks/profile_step.py --case maml2_omniglot_5w1s protonet_omniglot_60w5s
        -> results/profile_steps.json, and a table per case (ms per meta-step by kind, the largest instructions)

The step is `jmeta bench`'s 'jmeta' step (`jmeta.bench.jax_impl.build`). XLA:CPU emits one trace event per
executed instruction when `--xla_cpu_enable_xprof_traceme=true` is in `XLA_FLAGS` (set here before JAX starts);
each event is matched to its instruction in the compiled HLO, whose opcode and, for a fusion, whose fused
computation say what it does. The events' times add up to less than the step's wall time when XLA runs two
instructions at once, and to more when an instruction's own threads overlap; both sums are in the output.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import tempfile
import time

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_enable_xprof_traceme=true').strip()

from jmeta.runtime import tune_malloc  # noqa: E402

tune_malloc()

import jax  # noqa: E402

from jmeta.bench import cases, jax_impl  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ('matmul', 'convolution', 'patches (slice, pad, concatenate)', 'reduction', 'transpose or copy',
         'elementwise', 'scatter or gather', 'other')


def _instructions(hlo_text: str) -> dict[str, str]:
  """Instruction name -> kind, from the compiled module's text. A fusion is classed by the ops inside it."""
  computations: dict[str, list[str]] = {}
  current = None
  for line in hlo_text.splitlines():
    head = re.match(r'^(?:ENTRY )?%?([\w.\-]+) .*\{$', line)
    if head:
      current = head.group(1)
      computations[current] = []
    elif current is not None and '=' in line:
      computations[current].append(line.strip())
  ops_in = {name: [_opcode(line) for line in body] for name, body in computations.items()}
  kinds = {}
  for body in computations.values():
    for line in body:
      name = line.split('=', 1)[0].strip().lstrip('%').removeprefix('ROOT ').lstrip('%').split(' ')[0]
      op = _opcode(line)
      called = re.search(r'calls=%?([\w.\-]+)', line)
      inner = ops_in.get(called.group(1), []) if (op == 'fusion' and called) else [op]
      kinds[name] = _kind(inner)
  return kinds


def _opcode(line: str) -> str:
  rhs = line.split('=', 1)[1]
  m = re.search(r'\s([a-z][\w\-]*)\(', rhs)
  return m.group(1) if m else '?'


_MOVES = {'transpose', 'copy'}
_PLUMBING = {'parameter', 'constant', 'bitcast', 'reshape', 'broadcast', 'tuple', 'get-tuple-element'}


def _kind(ops: list[str]) -> str:
  """One of `KINDS` for an instruction made of `ops` (a fusion's ops, or the instruction's own opcode)."""
  s = set(ops)
  if 'dot' in s:
    return 'matmul'
  if 'convolution' in s:
    return 'convolution'
  if s & {'scatter', 'gather', 'dynamic-slice', 'dynamic-update-slice', 'select-and-scatter'}:
    return 'scatter or gather'
  if s & {'reduce', 'reduce-window'}:
    return 'reduction'
  if s & {'slice', 'pad', 'concatenate'}:
    return 'patches (slice, pad, concatenate)'
  if s & _MOVES and s <= _MOVES | _PLUMBING:
    return 'transpose or copy'
  if s & {'while', 'call', 'conditional', 'custom-call'} or not s - _PLUMBING:
    return 'other'
  return 'elementwise'


def profile(case: cases.Case, steps: int) -> dict:
  data = cases.batch(case)
  params = jax_impl.init_params(case, data)
  built = jax_impl.build(case, 'jmeta', params, data)
  for _ in range(2):
    built.run()
  t0 = time.perf_counter()
  for _ in range(steps):
    built.run()
  untraced = (time.perf_counter() - t0) / steps
  hlo = built.hlo_text
  kinds = _instructions(hlo)
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp, create_perfetto_trace=True)
    t0 = time.perf_counter()
    for _ in range(steps):
      built.run()
    traced = (time.perf_counter() - t0) / steps
    jax.profiler.stop_trace()
    path, = glob.glob(os.path.join(tmp, '**', '*.trace.json.gz'), recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  by_name: dict[str, float] = collections.defaultdict(float)
  for e in events:
    if e.get('ph') == 'X' and e.get('name') in kinds:
      by_name[e['name']] += e.get('dur', 0) / 1e3 / steps  # us -> ms per step
  by_kind = collections.Counter()
  for name, ms in by_name.items():
    by_kind[kinds[name]] += ms
  top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
  return {'case': case.name, 'steps': steps, 'untraced_ms': 1e3 * untraced, 'traced_ms': 1e3 * traced,
          'events_ms': sum(by_name.values()), 'by_kind_ms': {k: by_kind.get(k, 0.0) for k in KINDS},
          'top': [{'instruction': n, 'kind': kinds[n], 'ms': ms, 'hlo': _line(hlo, n)} for n, ms in top],
          'cores': len(os.sched_getaffinity(0)), 'config': dataclasses.asdict(case)}


def _line(hlo: str, name: str) -> str:
  m = re.search(rf'^\s*(?:ROOT )?%?{re.escape(name)} = ([^\n]*)', hlo, re.M)
  return m.group(1)[:200] if m else ''


def table(report: dict) -> str:
  lines = [f"### {report['case']}: {report['untraced_ms']:.0f} ms per meta-step untraced, "
           f"{report['traced_ms']:.0f} traced, instruction events sum to {report['events_ms']:.0f} ms", '',
           '| kind | ms per step | share of events |', '|---|---|---|']
  for kind, ms in sorted(report['by_kind_ms'].items(), key=lambda kv: -kv[1]):
    lines.append(f"| {kind} | {ms:.0f} | {100 * ms / report['events_ms']:.0f}% |")
  lines += ['', '| largest instructions | kind | ms per step |', '|---|---|---|']
  lines += [f"| `{t['instruction']}`: `{t['hlo'][:90]}` | {t['kind']} | {t['ms']:.1f} |" for t in report['top']]
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--case', nargs='+', default=['maml2_omniglot_5w1s', 'protonet_omniglot_60w5s'],
                      choices=sorted(cases.CASES))
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--vmap-size', type=int, help="the 'jmeta' step's vmap_size (default: the case's)")
  parser.add_argument('--quick', action='store_true', help='small shapes (checks the script)')
  parser.add_argument('--json', help='output file (default: results/profile_steps.json; none with --quick)')
  args = parser.parse_args()
  reports = []
  for name in args.case:
    case = cases.CASES[name]
    if args.vmap_size:
      case = dataclasses.replace(case, vmap_size=args.vmap_size)
    if args.quick:
      case = cases.quick(case)
    report = profile(case, args.steps)
    print(table(report) + '\n', flush=True)
    reports.append(report)
  path = args.json or (None if args.quick else os.path.join(HERE, 'results', 'profile_steps.json'))
  if path:
    with open(path, 'w') as f:
      json.dump(reports, f, indent=1)


if __name__ == '__main__':
  main()
