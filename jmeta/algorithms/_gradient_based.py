"""What MAML, first-order MAML, ANIL and Meta-SGD share: adapt on the support set, score on the query set."""

from __future__ import annotations

from typing import Callable

import jax
import optax

from jmeta.base import ApplyFn, InitFn, MetaLearner, Metrics, Params
from jmeta.checks import check_positive_int
from jmeta.inner import Mask, inner_loop, resolve_mask
from jmeta.tasks import Split, Task, check_task

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
"""`loss_fn(predictions, targets) -> scalar`, e.g. `jmeta.losses.mse`."""
MetricsFn = Callable[[jax.Array, jax.Array], Metrics]
"""`metrics_fn(predictions, targets) -> {name: scalar}`, reported on the query set."""


def split_loss(apply_fn: ApplyFn, loss_fn: LossFn, params: Params, split: Split) -> jax.Array:
  """`loss_fn` of the model's predictions on one split."""
  return loss_fn(apply_fn(params, split.x), split.y)


def gradient_based(
    apply_fn: ApplyFn,
    *,
    init: InitFn,
    unpack: Callable[[Params], tuple[Params, optax.GradientTransformation]],
    steps: int,
    first_order: bool,
    mask: Mask | None,
    loss_fn: LossFn,
    metrics_fn: MetricsFn | None,
    remat: bool,
) -> MetaLearner:
  """A meta-learner whose meta-loss is the query loss after an inner loop on the support set.

  `unpack(params) -> (model_params, inner_opt)` says where the model's initialisation lives in the meta-params
  and which optimizer adapts it (for Meta-SGD, one built from learned step sizes).
  """
  check_positive_int(steps, 'steps (inner steps during meta-training)')

  def run_inner(params: Params, support: Split, num_steps: int) -> tuple[Params, jax.Array]:
    model_params, opt = unpack(params)
    return inner_loop(
        lambda p: split_loss(apply_fn, loss_fn, p, support), model_params, opt, num_steps,
        mask=resolve_mask(mask, model_params), first_order=first_order, remat=remat)

  def adapt(params: Params, support: Split, *, steps: int = steps) -> Params:
    """Fast weights after `steps` inner steps on `support` (any `steps >= 0`, e.g. for evaluation curves)."""
    return run_inner(params, support, steps)[0]

  def loss(params: Params, task: Task) -> tuple[jax.Array, Metrics]:
    check_task(task)
    fast, support_losses = run_inner(params, task.support, steps)
    predictions = apply_fn(fast, task.query.x)
    query_loss = loss_fn(predictions, task.query.y)
    metrics = {'loss': query_loss, 'support_loss': support_losses[0]}
    if metrics_fn is not None:
      metrics.update(metrics_fn(predictions, task.query.y))
    return query_loss, metrics

  return MetaLearner(init=init, adapt=adapt, predict=apply_fn, loss=loss,
                     meta_grad=jax.grad(loss, has_aux=True))
