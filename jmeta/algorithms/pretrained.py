"""The "pretrained" baseline of the MAML paper: one network trained on all tasks, fine-tuned at test time."""

from __future__ import annotations

import jax
import optax

from jmeta import losses
from jmeta.algorithms._gradient_based import (INNER_OPTIONS, OMNIGLOT_FINN2017, SINUSOID_FINN2017, LossFn,
                                              MetricsFn, inner_optimizer, predictor_recipe, split_loss)
from jmeta.base import ApplyFn, MetaLearner, Metrics, Params
from jmeta.checks import check_positive_int
from jmeta.experiments import Algorithm, register_algorithm
from jmeta.inner import as_optimizer, inner_loop
from jmeta.tasks import Split, Task, all_examples, check_task


def pretrained(
    apply_fn: ApplyFn,
    inner_opt: optax.GradientTransformation | float = 0.01,
    steps: int = 1,
    *,
    loss_fn: LossFn = losses.mse,
    metrics_fn: MetricsFn | None = None,
) -> MetaLearner:
  """Multi-task pretraining, the baseline of Finn et al. (2017, arXiv:1703.03400, section 5.1).

  Meta-training fits one set of weights to every task's data (support and query) with no adaptation; `adapt`
  then fine-tunes them on a support set with `inner_opt` for `steps` steps, as the meta-learners do.
  """
  opt = as_optimizer(inner_opt)
  check_positive_int(steps, 'steps (fine-tuning steps)', minimum=0)

  def adapt(params: Params, support: Split, *, steps: int = steps) -> Params:
    return inner_loop(lambda p: split_loss(apply_fn, loss_fn, p, support), params, opt, steps)[0]

  def loss(params: Params, task: Task) -> tuple[jax.Array, Metrics]:
    check_task(task)
    data = all_examples(task)
    predictions = apply_fn(params, data.x)
    value = losses.masked(loss_fn)(predictions, data.y, data.mask)
    metrics = {'loss': value}
    if metrics_fn is not None:
      metrics.update(losses.masked(metrics_fn)(predictions, data.y, data.mask))
    return value, metrics

  return MetaLearner(init=lambda key, model_params: model_params, adapt=adapt, predict=apply_fn, loss=loss,
                     meta_grad=jax.grad(loss, has_aux=True))


register_algorithm(Algorithm(
    name='pretrained', family='baseline', title='the pretrained baseline',
    paper='Finn, Abbeel & Levine, 2017, arXiv:1703.03400 (baseline)', options=INNER_OPTIONS,
    # Finn et al. (2017): fine-tuned at test time with MAML's inner step size, on MAML's budget.
    published={'sinusoid': SINUSOID_FINN2017, 'omniglot': OMNIGLOT_FINN2017},
    build=predictor_recipe(lambda c, apply_fn, loss_fn, metrics_fn: pretrained(
        apply_fn, inner_optimizer(c), c.inner_steps, loss_fn=loss_fn, metrics_fn=metrics_fn)),
    fixed_ways=True))
