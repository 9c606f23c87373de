"""Timing one (case, implementation) pair, and the machine's matmul throughput; meant to run in a fresh process
(`jmeta.bench.run` starts one per pair) so that compile caches, allocator state and peak memory are its own."""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import time
from typing import Any

from jmeta.bench.cases import Case


def rss_mb() -> float:
  """This process's resident memory now, in MiB (Linux: /proc/self/status)."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 1024
  return float('nan')


def peak_rss_mb() -> float:
  """This process's peak resident memory so far, in MiB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def measure(case: Case, impl: str, steps: int = 20, seed: int = 0) -> dict[str, Any]:
  """Builds `impl`'s step for `case`, runs it once to warm up, then `steps` times; one record.

  `median_ms` and `min_ms` are per meta-step; `compile_s` is XLA's compile time (None for PyTorch) and
  `first_step_s` the warm-up call; `peak_mb` the process's peak resident memory, `base_mb` its resident memory
  before the first step (framework, data and params), `xla_memory_mb` XLA's own account of the step's buffers.
  """
  from jmeta.bench import cases, jax_impl
  data = cases.batch(case, seed)
  params = jax_impl.init_params(case, data, seed)
  if impl.startswith('torch'):
    import torch
    from jmeta.bench import torch_impl
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    built = torch_impl.build(case, impl, params, data)
  else:
    built = jax_impl.build(case, impl, params, data)
  base = rss_mb()
  t0 = time.perf_counter()
  built.run()
  first = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    built.run()
    times.append(time.perf_counter() - t0)
  median = statistics.median(times)
  return {
      'case': case.name, 'impl': impl, 'median_ms': 1e3 * median, 'min_ms': 1e3 * min(times),
      'compile_s': built.compile_s, 'first_step_s': first, 'tasks_per_s': case.meta_batch / median,
      'peak_mb': peak_rss_mb(), 'base_mb': base, 'xla_memory_mb': built.xla_memory_mb,
      'xla_flops': built.xla_flops, 'steps': steps, 'config': dataclasses.asdict(case),
      'threads': len(os.sched_getaffinity(0)),
  }


def matmul_gflops(sizes=(1024, 2048), repeats: int = 10) -> dict[str, float]:
  """float32 square matmuls through XLA: GFLOP/s (median of `repeats`) per size, and the best as 'best'."""
  import jax
  import jax.numpy as jnp
  out = {}
  for n in sizes:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      f(a, a).block_until_ready()
      times.append(time.perf_counter() - t0)
    out[str(n)] = 2 * n**3 / statistics.median(times) / 1e9
  out['best'] = max(out.values())
  return out


def model_flops(case: Case, seed: int = 0) -> float | None:
  from jmeta.bench import cases, jax_impl
  return jax_impl.model_flops(case, cases.batch(case, seed))
