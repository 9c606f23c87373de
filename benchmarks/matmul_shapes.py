"""How fast this machine multiplies matrices of conv4's shapes, against the large square matmuls that set the
"% of matmul" column of `benchmarks/speed.py`: the ceiling the Omniglot cases can reach, measured.

A 3x3 convolution as a matmul multiplies `[examples * H * W, 9 * C_in]` patches by `[9 * C_in, filters]`. Under
MAML's `vmap` each task has its own weights, so it is a batched matmul over tasks. Each row times one layer's
forward matmul (float32, median of 10 after a warm-up) through XLA and, when installed, PyTorch.

    python benchmarks/matmul_shapes.py        # -> results/matmul_shapes.json and a table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FILTERS = 64


def layer_shapes() -> list[dict]:
  """(batch, M, K, N) of each conv4 layer's forward matmul in `maml2_omniglot_5w1s` (32 tasks, 75 query images,
  stride 2 from 28x28) and `protonet_omniglot_60w5s` (600 images, stride 1 from 28x28, 2x2 max-pooling)."""
  rows = []
  for layer, (side, c_in) in enumerate(((14, 1), (7, FILTERS), (4, FILTERS), (2, FILTERS)), 1):
    rows.append({'case': 'maml2_omniglot_5w1s', 'layer': layer, 'batch': 32, 'm': 75 * side * side,
                 'k': 9 * c_in, 'n': FILTERS})
  for layer, (side, c_in) in enumerate(((28, 1), (14, FILTERS), (7, FILTERS), (3, FILTERS)), 1):
    rows.append({'case': 'protonet_omniglot_60w5s', 'layer': layer, 'batch': 1, 'm': 600 * side * side,
                 'k': 9 * c_in, 'n': FILTERS})
  return rows


def _time(f, repeats: int) -> float:
  f()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    f()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def measure(row: dict, repeats: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  b, m, k, n = row['batch'], row['m'], row['k'], row['n']
  flops = 2 * b * m * k * n
  rng = np.random.default_rng(0)
  x, w = rng.standard_normal((b, m, k), np.float32), rng.standard_normal((b, k, n), np.float32)
  xj, wj = jnp.asarray(x), jnp.asarray(w)
  f = jax.jit(lambda x, w: jnp.einsum('bmk,bkn->bmn', x, w))
  out = {**row, 'flops': flops, 'xla_gflops': flops / _time(lambda: f(xj, wj).block_until_ready(), repeats) / 1e9}
  try:
    import torch
  except ImportError:
    return out
  xt, wt = torch.from_numpy(x), torch.from_numpy(w)
  out['torch_gflops'] = flops / _time(lambda: torch.bmm(xt, wt), repeats) / 1e9
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--out', default=os.path.join(HERE, 'results'))
  args = parser.parse_args()
  from jmeta.bench import run as bench
  from jmeta.bench.timing import matmul_gflops
  from jmeta.runtime import tune_malloc
  tune_malloc()
  square = matmul_gflops()
  rows = [measure(r, args.repeats) for r in layer_shapes()]
  report = {'square_gflops': square, 'machine': bench.machine(), 'rows': rows}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'matmul_shapes.json'), 'w') as f:
    json.dump(report, f, indent=1)
  print(f"square matmuls: {square['best']:.0f} GFLOP/s (best of 1024 and 2048)")
  print('| case | layer | batch x M x K x N | XLA GFLOP/s | PyTorch GFLOP/s |\n|---|---|---|---|---|')
  for r in rows:
    torch_gflops = f"{r['torch_gflops']:.0f}" if 'torch_gflops' in r else '-'
    print(f"| {r['case']} | {r['layer']} | {r['batch']} x {r['m']} x {r['k']} x {r['n']} | {r['xla_gflops']:.0f} | "
          f"{torch_gflops} |")


if __name__ == '__main__':
  main()
