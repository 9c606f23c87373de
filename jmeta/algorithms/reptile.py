"""Reptile: move the initialisation toward the weights adapted to each task."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jmeta import losses
from jmeta.algorithms._gradient_based import (INNER_OPTIONS, LossFn, MetricsFn, inner_optimizer, predictor_recipe,
                                              split_loss)
from jmeta.base import ApplyFn, MetaLearner, Metrics, Params
from jmeta.checks import check_positive_int
from jmeta.experiments import Algorithm, Option, Published, register_algorithm
from jmeta.inner import as_optimizer, inner_loop
from jmeta.tasks import Split, Task, all_examples, check_task


def reptile(
    apply_fn: ApplyFn,
    inner_opt: optax.GradientTransformation | float = 0.02,
    steps: int = 5,
    *,
    use_query: bool = True,
    inner_batch: int | None = None,
    loss_fn: LossFn = losses.mse,
    metrics_fn: MetricsFn | None = None,
) -> MetaLearner:
  """Reptile (Nichol, Achiam & Schulman, 2018, arXiv:1803.02999).

  `meta_grad` returns `params - adapted`, the displacement from the weights after `steps` steps of `inner_opt`
  on the task's data, so any optax outer optimizer applies: `optax.sgd(eps)` gives the paper's update
  `params + eps * (adapted - params)`, averaged over the meta-batch.

  Args:
    apply_fn: `apply_fn(params, x) -> predictions`.
    inner_opt: an optax transformation, or a step size for plain SGD.
    steps: inner steps (>= 1).
    use_query: train the inner loop on support and query together (all of the task's data, as the paper does);
      False uses the support set alone.
    inner_batch: while meta-training, step i trains on a minibatch of this many of the task's `n` examples,
      numbers `(i + steps * j) mod n` for `j < inner_batch`: strided, so class-ordered data gives each
      minibatch every class, and `steps * inner_batch = n` visits each example once (Nichol et al.'s Omniglot
      setting: 5 steps of 10 over 10 examples of each of 5 classes). None: every step takes the whole task.
      Adapting at test time (`adapt`) always takes the whole support set.
    loss_fn, metrics_fn: as in `jmeta.maml`. `loss` reports the query loss after adapting on the support set.
  """
  opt = as_optimizer(inner_opt)
  check_positive_int(steps, 'steps (inner steps during meta-training)')
  if inner_batch is not None:
    check_positive_int(inner_batch, 'inner_batch')

  def run_inner(params: Params, split: Split, num_steps: int) -> tuple[Params, jax.Array]:
    return inner_loop(lambda p: split_loss(apply_fn, loss_fn, p, split), params, opt, num_steps)

  def adapt(params: Params, support: Split, *, steps: int = steps) -> Params:
    return run_inner(params, support, steps)[0]

  def loss(params: Params, task: Task) -> tuple[jax.Array, Metrics]:
    check_task(task)
    fast = adapt(params, task.support)
    predictions = apply_fn(fast, task.query.x)
    query_loss = losses.masked(loss_fn)(predictions, task.query.y, task.query.mask)
    metrics = {'loss': query_loss}
    if metrics_fn is not None:
      metrics.update(losses.masked(metrics_fn)(predictions, task.query.y, task.query.mask))
    return query_loss, metrics

  def meta_grad(params: Params, task: Task) -> tuple[Params, Metrics]:
    check_task(task)
    data = task.support
    if use_query:
      data = all_examples(task)
    if inner_batch is None:
      fast, train_losses = run_inner(params, data, steps)
    else:
      n = jax.tree.leaves(data)[0].shape[0]
      rows = (jnp.arange(steps)[:, None] + steps * jnp.arange(inner_batch)[None, :]) % n
      batches = jax.tree.map(lambda a: a[rows], data)
      fast, train_losses = inner_loop(lambda p, b: split_loss(apply_fn, loss_fn, p, b), params, opt, steps,
                                      batches=batches)
    grads = jax.tree.map(lambda p, f: p - f, params, jax.lax.stop_gradient(fast))
    return grads, {'loss': split_loss(apply_fn, loss_fn, fast, data), 'support_loss': train_losses[0]}

  return MetaLearner(init=lambda key, model_params: model_params, adapt=adapt, predict=apply_fn, loss=loss,
                     meta_grad=meta_grad)


def _one_pass(f) -> int:
  """Inner minibatches that take one pass over a training task's examples in `inner_steps` steps."""
  return -(-f['train_ways'] * (f['shots'] + f['queries']) // f['inner_steps'])


register_algorithm(Algorithm(
    name='reptile', family='gradient-based', title='reptile',
    paper='Nichol, Achiam & Schulman, 2018, arXiv:1803.02999',
    options=INNER_OPTIONS + (
        Option('inner_batch', 'examples per inner step while meta-training (default: one pass over the task on '
               'omniglot, else the whole task)', optional=True),),
    published={
        # Nichol et al. (2018), the sine-wave experiment: outer SGD 0.1 annealed linearly to 0, 30,000 iterations.
        # Its inner SGD step of 0.02 (for a tanh net) diverges with this ReLU net (after ~9,000 steps at K = 10),
        # as does 0.01 for 10 steps (~13,000 steps at K = 5); 0.005 for 10 full-batch steps over the task's data
        # trains stably (measured at K = 5 and 20) and adapts best of those tried. Finn et al.'s meta-batch of 25.
        'sinusoid': dict(meta_batch=25, steps=30_000, inner_steps=10, inner_lr=0.005, inner_opt='sgd',
                         outer_lr=0.1, outer_opt='sgd', outer_decay=True),
        # Nichol et al. (2018) and their code (run_omniglot.py, --train-shots 10 --inner-batch 10): training tasks
        # of 10 examples per class, 5 inner steps of Adam 1e-3 with beta1 = 0 on minibatches that take one pass
        # over them (10 examples at 5-way), 50 full-support steps at test time; outer SGD 1.0 annealed to 0, 5
        # tasks a meta-batch, 100,000 meta-steps.
        'omniglot': dict(meta_batch=5, steps=100_000, inner_steps=5, eval_inner_steps=50, inner_lr=1e-3,
                         inner_opt='adam0', outer_lr=1.0, outer_opt='sgd', outer_decay=True,
                         queries=lambda f: max(10 - f['shots'], 1), inner_batch=_one_pass),
    },
    build=predictor_recipe(lambda c, apply_fn, loss_fn, metrics_fn: reptile(
        apply_fn, inner_optimizer(c), c.inner_steps, inner_batch=c.inner_batch, loss_fn=loss_fn,
        metrics_fn=metrics_fn)),
    fixed_ways=True,
    results=(
        Published('omniglot', {'ways': 5, 'shots': 1}, 'accuracy %', 97.68, 'Nichol et al. (2018), table 1, '
                  'transductive'),
        Published('omniglot', {'ways': 5, 'shots': 5}, 'accuracy %', 99.48, 'Nichol et al. (2018), table 1, '
                  'transductive'),
    )))
