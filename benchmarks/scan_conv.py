"""A meta-step run inside `lax.scan` (as `jmeta.fit` runs its steps) against the same step as one jitted call,
with `flax.linen.Conv`, `jmeta.nn.Conv` (impl 'im2col' or 'xla') or `conv_variants.XlaIm2colGradConv` in the
encoder and the relation module.

XLA:CPU's own convolutions (`flax`) run 10-40x slower inside the scan: JAX's gradients of a channels-last
convolution are not in XLA:CPU's canonical layout, and XLA makes convolutions canonical only outside loops
(`jmeta/nn/conv.py`, `_canonical_conv`). `jmeta_xla` is the same convolution with gradients written canonical;
`jmeta` is the im2col default (strided slices and a matmul). `xla_im2col_grad` runs XLA's convolution forward and
for the input's gradient (the kernel's gradient is a matmul). Prints one JSON line per variant:

    python benchmarks/scan_conv.py --algo relation --conv flax jmeta_xla jmeta xla_im2col_grad
    python benchmarks/scan_conv.py --algo protonet --ways 60 --shots 5 --queries 5 --conv jmeta xla_im2col_grad
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

from jmeta.runtime import tune_malloc

tune_malloc()

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import optax  # noqa: E402

from jmeta import algorithms, nn as jnn  # noqa: E402
from jmeta.datasets import omniglot  # noqa: E402
from jmeta.datasets.episodes import episodes  # noqa: E402
from jmeta.models import conv4  # noqa: E402
from jmeta.training.meta_step import init_state, meta_step  # noqa: E402

from conv_variants import XlaIm2colGradConv  # noqa: E402  (benchmarks/, the script's own folder)

CONVS = {'flax': nn.Conv, 'jmeta': jnn.Conv, 'jmeta_xla': functools.partial(jnn.Conv, impl='xla'),
         'xla_im2col_grad': XlaIm2colGradConv}


def learner(algo: str, conv: type, images, ways: int = 5):
  if algo == 'relation':
    model = conv4.functional(conv4.conv4_relation(conv=conv))
    shape = jax.eval_shape(model.apply, jax.eval_shape(model.init, jax.random.PRNGKey(0), images[:2, 0]),
                           images[:2, 0]).shape
    return model, algorithms.relation_net(model.apply, ways, shape[1:],
                                          relation_module=algorithms.RelationModule(conv=conv))
  model = conv4.functional(conv4.conv4_protonet(conv=conv))
  return model, algorithms.protonet(model.apply, ways)


def measure(algo: str, conv_name: str, steps: int, repeats: int, data_dir: str | None, ways: int = 5,
            shots: int = 1, queries: int | None = None) -> dict:
  images = omniglot.split_images(omniglot.load(data_dir), 'train', 'vinyals')
  model, lrn = learner(algo, CONVS[conv_name], images, ways)
  queries = queries or (19 if algo == 'relation' else 15)
  sample = episodes(images, ways, shots, queries, rotations=True)
  key = jax.random.PRNGKey(0)
  outer = optax.adam(1e-3)
  state = init_state(lrn, outer, key, model.init(key, images[:2, 0]))
  batch = jax.jit(lambda k: jax.vmap(sample)(jax.random.split(k, 1)))(key)
  step = meta_step(lrn, outer)
  variants = {'one jit call': (jax.jit(step), 1),
              'lax.scan': (jax.jit(lambda s, b: jax.lax.scan(lambda s, _: step(s, b), s, length=steps)), steps)}
  out = {'algo': algo, 'conv': conv_name, 'ways': ways, 'shots': shots, 'queries': queries, 'steps_per_scan': steps,
         'cores': len(os.sched_getaffinity(0))}
  for name, (fn, per_call) in variants.items():
    s, _ = fn(state, batch)
    jax.block_until_ready(s)
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      s, _ = fn(s, batch)
      jax.block_until_ready(s)
      times.append((time.perf_counter() - t0) / per_call)
    out[f'{name} ms/step'] = round(1e3 * statistics.median(times), 1)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--algo', choices=('relation', 'protonet'), default='relation')
  parser.add_argument('--conv', nargs='+', choices=sorted(CONVS), default=['flax', 'jmeta'])
  parser.add_argument('--steps', type=int, default=10, help='meta-steps per scan')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--data-dir')
  parser.add_argument('--ways', type=int, default=5)
  parser.add_argument('--shots', type=int, default=1)
  parser.add_argument('--queries', type=int, help='per class (default: 19 for relation, 15 for protonet)')
  args = parser.parse_args()
  for conv in args.conv:
    record = measure(args.algo, conv, args.steps, args.repeats, args.data_dir, args.ways, args.shots, args.queries)
    print(json.dumps(record), flush=True)


if __name__ == '__main__':
  main()
