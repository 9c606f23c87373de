"""A diagnostic, not a benchmark: MAML's float64 meta-gradient against central finite differences of its loss.

For one `jmeta bench` case at a chosen image size, prints the directional derivative of the mean meta-loss along
a random unit direction three ways: central finite differences of the loss (over several step sizes, to show
they have converged), `jax.grad` with jmeta's convolution (`jmeta.nn.Conv`), and `jax.grad` with
`flax.linen.Conv`. Where the loss is smooth the three must agree to about 1e-7.

It found that, under `jit` and `vmap`, the derivative of a max-pool written with `jnp.max` lost part of the
second-order meta-gradient (16x16: -0.0872 and -0.0905 against -0.0850); `jmeta.nn.max_pool` now selects by
index, and all three agree (tests/test_pool.py pins the smallest case found).

    python benchmarks/second_order_check.py --size 16                # second order
    python benchmarks/second_order_check.py --size 16 --first-order  # both convolutions agree with each other
"""

from __future__ import annotations

import argparse
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jmeta.bench import cases, jax_impl


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--case', default='maml2_miniimagenet_5w1s', choices=[c for c in cases.CASES if 'maml' in c])
  parser.add_argument('--size', type=int, default=16, help='image side (default 16)')
  parser.add_argument('--filters', type=int, default=4)
  parser.add_argument('--first-order', action='store_true')
  args = parser.parse_args()
  jax.config.update('jax_enable_x64', True)
  case = dataclasses.replace(cases.CASES[args.case], size=args.size, inner_steps=1, filters=args.filters,
                             first_order=args.first_order)
  data = cases.batch(case, seed=1, dtype=np.float64)
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), jax_impl.init_params(case, data, seed=1))
  task = jax_impl.as_task(data)
  flat, unravel = ravel_pytree(params)
  direction = jax.random.normal(jax.random.PRNGKey(3), flat.shape, jnp.float64)
  direction = direction / jnp.linalg.norm(direction)

  def mean_loss(conv):
    lrn = jax_impl.learner(case, jax_impl.model(case, conv=conv).apply)
    return jax.jit(lambda p: jnp.mean(jax.vmap(lambda t: lrn.loss(p, t)[0])(task)))

  print(f'{args.case} at {args.size}x{args.size}, {args.filters} filters, '
        f'{"first" if args.first_order else "second"} order, float64; derivative along a random unit direction')
  for name, conv in (('jmeta.nn.Conv', None), ('flax.linen.Conv', nn.Conv)):
    grad = ravel_pytree(jax.jit(jax.grad(mean_loss(conv)))(params))[0]
    print(f'  jax.grad, {name}: {float(grad @ direction):.10f}')
  loss = mean_loss(None)
  for eps in (1e-5, 1e-6, 1e-7, 1e-8):
    fd = (loss(unravel(flat + eps * direction)) - loss(unravel(flat - eps * direction))) / (2 * eps)
    print(f'  central difference of the second-order loss, step {eps:g}: {float(fd):.10f}')


if __name__ == '__main__':
  main()
