"""Times forms of conv4's convolution on XLA:CPU: MAML's meta-step with per-task weights, and a ProtoNets step.

Cases (random data; Omniglot shapes, 28x28x1 NHWC, conv4 with 64 filters, BatchNorm with batch statistics, ReLU):

- maml: second-order MAML meta-step, 5-way 1-shot, 15 queries, meta-batch 32: `value_and_grad` of the mean query
  loss after one inner SGD step (lr 0.4), tasks `vmap`ped so every task has its own fast weights; stride-2 blocks.
- maml_fwd: the forward alone with per-task weights, `vmap` over 32 tasks of 75 query images.
- proto: ProtoNets' training step form, 60-way 5-shot 5-query (600 images): forward and backward of a stride-1
  conv4 with 2x2 max-pools and a linear head (standing in for the prototype loss, same convolutions).
- proto_fwd: that forward alone.

`xla_im2col_grad` (XLA's convolution forward and for the input's gradient, an im2col matmul for the kernel's, as a
`jax.custom_jvp`: `XlaIm2colGradConv`) is timed on the ProtoNets step only: under `vmap` with per-task kernels its
forward is XLA's grouped convolution, the 45 s MAML step of plain `flax.linen.Conv`.

Variants are compiled first (compile time recorded apart), warmed up by one call, then timed in interleaved rounds
(so a change of load on a shared machine hits all alike); the median of `--runs` runs is reported, with the
process's CPU time alongside. A variant whose warm-up call takes over `--slow-s` seconds is timed `--slow-runs`
times only. XLA's cost analysis gives each program's FLOPs.

Run pinned to one core, e.g. `taskset -c 1 .venv/bin/python benchmarks/conv_variants.py`; `--malloc tuned` runs
in a child process with glibc's malloc told to keep freed memory, `--malloc hugetlb` with it asking for
transparent huge pages (see the notes: page faults are slow on this machine); `--quick` skips the slowest
variant (plain `flax.linen.Conv` under `vmap` in the MAML step, about a minute per call); `--ablations` adds
variants of jmeta's im2col that each drop one of its choices. Records are merged into
benchmarks/results/conv_variants.json (one list, keyed by variant, case and malloc mode) and the tables between the
markers of benchmarks/notes/conv_variants.md are rewritten from it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jmeta.nn import BatchNorm, Conv

conv_lib = importlib.import_module('jmeta.nn.conv')  # the module: the attribute jmeta.nn.conv is the function

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results' / 'conv_variants.json'
NOTES = ROOT / 'benchmarks' / 'notes' / 'conv_variants.md'
BEGIN, END = '<!-- conv_variants tables: begin -->', '<!-- conv_variants tables: end -->'
MALLOC_ENV = {
    'tuned': {'MALLOC_ARENA_MAX': '1', 'MALLOC_MMAP_MAX_': '0', 'MALLOC_TRIM_THRESHOLD_': str(2**40)},
    'hugetlb': {'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'},
}
TASKS, WAYS, QUERIES = 32, 5, 15


class _ConvForm(nn.Module):
  """`flax.linen.Conv`'s params (a `[*kernel_size, in, features]` kernel and a bias) around `self.convolve`."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: str = 'SAME'

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(), self.kernel_size + (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    return self.convolve(x, kernel) + bias


class PatchesConv(_ConvForm):
  """`lax.conv_general_dilated_patches` then a matmul: the patches op is itself a (grouped) convolution."""

  def convolve(self, x, kernel):
    p = lax.conv_general_dilated_patches(x, self.kernel_size, self.strides, self.padding,
                                         dimension_numbers=('NHWC', 'OIHW', 'NHWC'))
    kh, kw, cin, cout = kernel.shape
    return p @ jnp.transpose(kernel, (2, 0, 1, 3)).reshape(cin * kh * kw, cout)


CHUNK_BYTES = 4 << 20
"""`_kernel_tangent` builds its patches for chunks of about this many bytes of images (cache-sized)."""


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _xla_im2col_grad(x, kernel, strides, pads):
  """XLA's convolution, differentiated so that reverse mode computes the input's gradient with XLA's convolution
  and the kernel's as an im2col matmul (`_kernel_tangent`); forward mode works too."""
  return conv_lib._conv_xla(x, kernel, strides, pads, None)


def _xla_im2col_grad_jvp(strides, pads, primals, tangents):
  # Linear in the tangents: reverse mode transposes the input's term into XLA's input-gradient convolution and
  # the kernel's into `_kernel_tangent`'s chunked `patches @ cotangent`.
  x, kernel = primals
  dx, dkernel = tangents
  y = conv_lib._conv_xla(x, kernel, strides, pads, None)
  terms = []
  if not isinstance(dx, SymbolicZero):
    terms.append(conv_lib._conv_xla(dx, kernel, strides, pads, None))
  if not isinstance(dkernel, SymbolicZero):
    terms.append(_kernel_tangent(x, dkernel, strides, pads))
  return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


_xla_im2col_grad.defjvp(_xla_im2col_grad_jvp, symbolic_zeros=True)


def _kernel_tangent(x, dkernel, strides, pads):
  """`conv(x, dkernel)` as channel-major patches `[k, m]` contracted with `dkernel` `[k, cout]` over `k`, so that
  its transpose, the kernel's gradient, is `patches @ cotangent` (`[k, m] x [m, cout]`, the layout XLA:CPU's dot
  runs fastest), built a chunk of images at a time in a rematerialised `lax.scan` so each chunk stays in cache."""
  n = dkernel.ndim - 2
  window, (cin, cout) = dkernel.shape[:n], dkernel.shape[n:]
  batch, spatial = x.shape[:x.ndim - n - 1], x.shape[x.ndim - n - 1:-1]
  images, k = int(np.prod(batch)), int(np.prod(window)) * cin
  out = [max(0, (s + lo + hi - w) // st + 1) for s, (lo, hi), w, st in zip(spatial, pads, window, strides)]
  target = max(1, min(images, CHUNK_BYTES // max(k * int(np.prod(out)) * x.dtype.itemsize, 1)))
  size = max(d for d in range(1, target + 1) if images % d == 0)  # a divisor of the images: no padded copies
  w = dkernel.reshape(k, cout)

  @functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.nothing_saveable)
  def chunk(_, xc):
    views, _ = conv_lib._shifted_views(jnp.moveaxis(xc, -1, 0), window, strides, pads, 2)  # [cin, size, *spatial]
    return None, lax.dot_general(jnp.stack(views, 0).reshape(k, -1), w, (((0,), (0,)), ((), ())))

  _, ys = lax.scan(chunk, None, x.reshape((images // size, size) + tuple(spatial) + (cin,)))
  return ys.reshape(batch + tuple(out) + (cout,))


class XlaIm2colGradConv(_ConvForm):
  """`flax.linen.Conv`'s outputs through `_xla_im2col_grad` (shared kernels: under `vmap` with per-task kernels its
  forward is XLA's grouped convolution again)."""

  def convolve(self, x, kernel):
    pads = conv_lib._explicit_pads(self.padding, x.shape[-3:-1], self.kernel_size, self.strides)
    return _xla_im2col_grad(x, kernel, tuple(self.strides), pads)


class Encoder(nn.Module):
  """conv4 and a linear head: `[batch, 28, 28, 1] -> [batch, classes]`."""
  conv: Any
  strides: int
  pool: bool
  classes: int
  reshape_pool: bool = False
  jmeta_norm: bool = False

  @nn.compact
  def __call__(self, x):
    for _ in range(4):
      x = self.conv(64, (3, 3), strides=(self.strides, self.strides), padding='SAME')(x)
      if self.jmeta_norm:
        x = BatchNorm()(x)
      else:
        x = nn.BatchNorm(use_running_average=False, use_fast_variance=False)(x)
      x = nn.relu(x)
      if self.pool and self.reshape_pool:
        n, h, w, c = x.shape
        x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max((2, 4))
      elif self.pool:
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
    return nn.Dense(self.classes)(x.reshape(x.shape[0], -1))


def _xent(logits, labels):
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def _apply(model, params, x):
  return model.apply({'params': params}, x, mutable=['batch_stats'])[0]


def _task_loss(model):
  def task_loss(params, xs, ys, xq, yq):
    g = jax.grad(lambda p: _xent(_apply(model, p, xs), ys))(params)
    fast = jax.tree.map(lambda p, d: p - 0.4 * d, params, g)
    return _xent(_apply(model, fast, xq), yq)
  return task_loss


class PythonLoop:
  """The meta-step as a Python loop over tasks of one jitted per-task `value_and_grad`, then a jitted mean.

  Quacks like `jax.jit(f)` for `run_case`: `lower(*args).compile()` gives the callable.
  """

  def __init__(self, model):
    self.task = jax.jit(jax.value_and_grad(_task_loss(model)))
    self.mean = jax.jit(lambda outs: jax.tree.map(lambda *a: sum(a) / len(a), *outs))

  def lower(self, *args):
    self.compiled = self.task.lower(*[a if i == 0 else a[0] for i, a in enumerate(args)]).compile()
    return self

  def compile(self):
    return self

  def cost_analysis(self):
    cost = self.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {'flops': cost.get('flops', 0.0) * TASKS}

  def __call__(self, params, *data):
    return self.mean([self.compiled(params, *[d[i] for d in data]) for i in range(TASKS)])


def maml_step(model, tasks_by='vmap'):
  """`(params, xs, ys, xq, yq) -> (loss, grads)`: second-order MAML, one inner SGD step, tasks on the leading axis."""
  task_loss = _task_loss(model)

  def loss(params, xs, ys, xq, yq):
    if tasks_by == 'vmap':
      losses = jax.vmap(task_loss, (None, 0, 0, 0, 0))(params, xs, ys, xq, yq)
    else:
      losses = lax.map(lambda t: task_loss(params, *t), (xs, ys, xq, yq))
    return jnp.mean(losses)

  return jax.value_and_grad(loss)


@contextlib.contextmanager
def _patched(**values):
  """Module globals of jmeta.nn.conv changed while a variant is traced (ablations)."""
  old = {k: getattr(conv_lib, k) for k in values}
  for k, v in values.items():
    setattr(conv_lib, k, v)
  try:
    yield
  finally:
    for k, v in old.items():
      setattr(conv_lib, k, v)


IM2COL = functools.partial(Conv, impl='im2col')
# variant -> (conv module, patches of jmeta.nn.conv while tracing, extra options)
VARIANTS = {
    'flax.linen.Conv': (nn.Conv, {}, {}),
    'flax.linen.Conv, lax.map over tasks': (nn.Conv, {}, {'tasks_by': 'map'}),
    'flax.linen.Conv, Python loop over tasks': (nn.Conv, {}, {'tasks_by': 'loop'}),
    'jmeta Conv im2col': (IM2COL, {}, {}),
    'im2col, channel-minor first layer': (IM2COL, {'SMALL_CIN': 0}, {}),
    'im2col, channel-major all layers': (IM2COL, {'SMALL_CIN': 1 << 30}, {}),
    'conv_general_dilated_patches + matmul': (PatchesConv, {}, {}),
    'jmeta Conv im2col + reshape max-pool': (IM2COL, {}, {'reshape_pool': True}),
    'flax.linen.Conv + reshape max-pool': (nn.Conv, {}, {'reshape_pool': True}),
    'jmeta Conv im2col + jmeta BatchNorm': (IM2COL, {}, {'jmeta_norm': True}),
    'jmeta Conv im2col + reshape max-pool + jmeta BatchNorm': (IM2COL, {}, {'reshape_pool': True,
                                                                            'jmeta_norm': True}),
    'xla_im2col_grad + reshape max-pool': (XlaIm2colGradConv, {}, {'reshape_pool': True}),
    'xla_im2col_grad + reshape max-pool + jmeta BatchNorm': (XlaIm2colGradConv, {}, {'reshape_pool': True,
                                                                                            'jmeta_norm': True}),
}
CASES = {
    'maml': ['flax.linen.Conv', 'flax.linen.Conv, lax.map over tasks', 'flax.linen.Conv, Python loop over tasks',
             'jmeta Conv im2col', 'conv_general_dilated_patches + matmul', 'jmeta Conv im2col + jmeta BatchNorm'],
    'maml_fwd': ['flax.linen.Conv', 'jmeta Conv im2col', 'conv_general_dilated_patches + matmul'],
    'proto': ['flax.linen.Conv', 'jmeta Conv im2col', 'conv_general_dilated_patches + matmul',
              'flax.linen.Conv + reshape max-pool', 'jmeta Conv im2col + reshape max-pool',
              'jmeta Conv im2col + reshape max-pool + jmeta BatchNorm',
              'xla_im2col_grad + reshape max-pool',
              'xla_im2col_grad + reshape max-pool + jmeta BatchNorm'],
    'proto_fwd': ['flax.linen.Conv', 'jmeta Conv im2col'],
}
ABLATIONS = {
    'maml': ['im2col, channel-minor first layer', 'im2col, channel-major all layers'],
    'proto': ['im2col, channel-minor first layer'],
}
BASELINE = {'maml': 'flax.linen.Conv', 'maml_fwd': 'flax.linen.Conv', 'proto': 'flax.linen.Conv',
            'proto_fwd': 'flax.linen.Conv'}


def build(case, variant):
  """`(jitted function, args)` of one case with one variant's convolution."""
  conv, _, opts = VARIANTS[variant]
  rng = np.random.default_rng(0)
  if case.startswith('maml'):
    model = Encoder(conv, strides=2, pool=False, classes=WAYS, jmeta_norm=opts.get('jmeta_norm', False))
    xs = jnp.asarray(rng.standard_normal((TASKS, WAYS, 28, 28, 1)), jnp.float32)
    xq = jnp.asarray(rng.standard_normal((TASKS, WAYS * QUERIES, 28, 28, 1)), jnp.float32)
    params = model.init(jax.random.key(0), xq[0])['params']
    if case == 'maml_fwd':
      per_task = jax.tree.map(lambda a: jnp.broadcast_to(a, (TASKS,) + a.shape) + 0.0, params)
      return jax.jit(jax.vmap(lambda p, x: _apply(model, p, x))), (per_task, xq)
    ys = jnp.tile(jnp.arange(WAYS), (TASKS, 1))
    yq = jnp.tile(jnp.repeat(jnp.arange(WAYS), QUERIES), (TASKS, 1))
    if opts.get('tasks_by') == 'loop':
      return PythonLoop(model), (params, xs, ys, xq, yq)
    return jax.jit(maml_step(model, opts.get('tasks_by', 'vmap'))), (params, xs, ys, xq, yq)
  model = Encoder(conv, strides=1, pool=True, classes=60, reshape_pool=opts.get('reshape_pool', False),
                  jmeta_norm=opts.get('jmeta_norm', False))
  x = jnp.asarray(rng.standard_normal((600, 28, 28, 1)), jnp.float32)
  y = jnp.arange(600) % 60
  params = model.init(jax.random.key(0), x)['params']
  if case == 'proto_fwd':
    return jax.jit(lambda p, x: _apply(model, p, x)), (params, x)
  return jax.jit(jax.value_and_grad(lambda p, x, y: _xent(_apply(model, p, x), y))), (params, x, y)


def _call(compiled, args):
  w, c = time.perf_counter(), time.process_time()
  jax.block_until_ready(compiled(*args))
  return time.perf_counter() - w, time.process_time() - c


def run_case(case, variants, args, malloc):
  compiled, records = {}, []
  for v in variants:
    f, a = build(case, v)
    with _patched(**VARIANTS[v][1]):
      t0 = time.perf_counter()
      c = f.lower(*a).compile()
      compile_s = time.perf_counter() - t0
    cost = c.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    warm, _ = _call(c, a)
    runs = args.slow_runs if warm > args.slow_s else args.runs
    compiled[v] = (c, a, runs, compile_s, float(cost.get('flops', 0.0)), [], [])
    print(f'  compiled {case} / {v}: {compile_s:.1f}s, warm-up call {warm:.2f}s, {runs} runs', file=sys.stderr,
          flush=True)
  for r in range(max(x[2] for x in compiled.values())):
    for v, (c, a, runs, _, _, walls, cpus) in compiled.items():
      if r < runs:
        w, p = _call(c, a)
        walls.append(w)
        cpus.append(p)
  base_flops = compiled[BASELINE[case]][4] if BASELINE[case] in compiled else None
  for v, (c, a, runs, compile_s, flops, walls, cpus) in compiled.items():
    med = float(np.median(walls))
    records.append({
        'variant': v, 'case': case, 'median_ms': round(med * 1e3, 1), 'min_ms': round(min(walls) * 1e3, 1),
        'cpu_median_ms': round(float(np.median(cpus)) * 1e3, 1), 'runs': runs, 'compile_s': round(compile_s, 2),
        'flops': flops, 'gflops_per_s': round(flops / med / 1e9, 1),
        'effective_gflops_per_s': round(base_flops / med / 1e9, 1) if base_flops else None,
        'backend': jax.default_backend(), 'cores': sorted(os.sched_getaffinity(0)), 'malloc': malloc,
        'jax': jax.__version__, 'xla_flags': os.environ.get('XLA_FLAGS', ''),
    })
    print(f'{case:9s} {v:40s} {med * 1e3:9.1f} ms (cpu {records[-1]["cpu_median_ms"]:9.1f})', file=sys.stderr,
          flush=True)
  return records


def _table(records):
  rows = ['| case | variant | median ms | min ms | CPU ms | runs | compile s | XLA GFLOP | GFLOP/s | '
          'effective GFLOP/s | vs flax.linen.Conv |', '|' + ' --- |' * 11]
  for case in CASES:
    rs = [r for r in records if r['case'] == case]
    base = next((r for r in rs if r['variant'] == BASELINE[case]), None)
    order = CASES[case] + ABLATIONS.get(case, [])
    for r in sorted(rs, key=lambda r: order.index(r['variant']) if r['variant'] in order else len(order)):
      ratio = f'{base["median_ms"] / r["median_ms"]:.2f}x' if base else ''
      eff = f'{base["flops"] / r["median_ms"] / 1e6:.1f}' if base else ''
      rows.append(f'| {case} | {r["variant"]} | {r["median_ms"]:.1f} | {r["min_ms"]:.1f} | {r["cpu_median_ms"]:.1f} | '
                  f'{r["runs"]} | {r["compile_s"]:.1f} | {r["flops"] / 1e9:.2f} | {r["gflops_per_s"]} | {eff} | '
                  f'{ratio} |')
  return '\n'.join(rows)


def write_outputs(records):
  old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
  key = lambda r: (r['variant'], r['case'], r['malloc'])
  new_keys = {key(r) for r in records}
  merged = [r for r in old if key(r) not in new_keys] + records
  RESULTS.parent.mkdir(parents=True, exist_ok=True)
  RESULTS.write_text(json.dumps(merged, indent=1) + '\n')
  parts = []
  for malloc in ('default', *MALLOC_ENV):
    rs = [r for r in merged if r['malloc'] == malloc]
    if rs:
      cores, flags = rs[0]['cores'], rs[0]['xla_flags'] or 'none'
      parts.append(f'### malloc: {malloc}\n\nbackend {rs[0]["backend"]}, jax {rs[0]["jax"]}, cores {cores}, '
                   f'XLA_FLAGS: {flags}\n\n{_table(rs)}\n')
  block = f'{BEGIN}\n' + '\n'.join(parts) + f'{END}'
  text = NOTES.read_text() if NOTES.exists() else f'# Convolution variants on XLA:CPU\n\n{BEGIN}\n{END}\n'
  if BEGIN not in text:
    text += f'\n{BEGIN}\n{END}\n'
  head, rest = text.split(BEGIN, 1)
  NOTES.parent.mkdir(parents=True, exist_ok=True)
  NOTES.write_text(head + block + rest.split(END, 1)[1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--cases', default=','.join(CASES))
  parser.add_argument('--variants', default='', help='semicolon-separated subset of variant names (default: all)')
  parser.add_argument('--runs', type=int, default=10)
  parser.add_argument('--slow-runs', type=int, default=2)
  parser.add_argument('--slow-s', type=float, default=5.0)
  parser.add_argument('--malloc', choices=('default', *MALLOC_ENV), default='default')
  parser.add_argument('--quick', action='store_true', help='skip flax.linen.Conv under vmap in the MAML step')
  parser.add_argument('--ablations', action='store_true', help='also time the ablations of jmeta Conv im2col')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.malloc != 'default' and not args.child:
    env = {**os.environ, **MALLOC_ENV[args.malloc]}
    out = subprocess.run([sys.executable, __file__, *sys.argv[1:], '--child'], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    write_outputs(json.loads(out))
    return
  chosen = set(filter(None, args.variants.split(';')))
  records = []
  for case in args.cases.split(','):
    variants = CASES[case] + (ABLATIONS.get(case, []) if args.ablations else [])
    variants = [v for v in variants if not chosen or v in chosen]
    if args.quick and case == 'maml':
      variants = [v for v in variants if v != 'flax.linen.Conv']
    records += run_case(case, variants, args, args.malloc)
  if args.child:
    print(json.dumps(records))
  else:
    write_outputs(records)


if __name__ == '__main__':
  main()
