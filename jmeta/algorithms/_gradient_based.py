"""What MAML, first-order MAML, ANIL and Meta-SGD share: adapt on the support set, score on the query set."""

from __future__ import annotations

from typing import Callable

import jax
import optax

from jmeta import losses
from jmeta.base import ApplyFn, InitFn, MetaLearner, Metrics, Params
from jmeta.checks import check_positive_int
from jmeta.experiments import OPTIMIZERS, Config, Data, Option, Recipe, optimizer
from jmeta.inner import Mask, inner_loop, resolve_mask
from jmeta.tasks import Split, Task, check_task

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
"""`loss_fn(predictions, targets) -> scalar`, e.g. `jmeta.losses.mse`."""
MetricsFn = Callable[[jax.Array, jax.Array], Metrics]
"""`metrics_fn(predictions, targets) -> {name: scalar}`, reported on the query set."""


def split_loss(apply_fn: ApplyFn, loss_fn: LossFn, params: Params, split: Split) -> jax.Array:
  """`loss_fn` of the model's predictions on one split, over its real examples if it has a mask."""
  return losses.masked(loss_fn)(apply_fn(params, split.x), split.y, split.mask)


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

  Splits with a mask (padded tasks) are honoured: the inner and query losses average over the real examples, which
  needs `loss_fn` and `metrics_fn` to be means over examples.
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
    query_loss = losses.masked(loss_fn)(predictions, task.query.y, task.query.mask)
    metrics = {'loss': query_loss, 'support_loss': support_losses[0]}
    if metrics_fn is not None:
      metrics.update(losses.masked(metrics_fn)(predictions, task.query.y, task.query.mask))
    return query_loss, metrics

  return MetaLearner(init=init, adapt=adapt, predict=apply_fn, loss=loss,
                     meta_grad=jax.grad(loss, has_aux=True))


# What the registry needs of the family: its shared options, the budgets several of its papers share, and how a
# member is built from a dataset's predictor model.

INNER_OPTIONS = (
    Option('inner_steps', 'inner steps per task while training (default: published)'),
    Option('eval_inner_steps', 'inner steps per task at validation and test time (default: published, else as '
           '--inner-steps)', minimum=0, default=lambda f: f['inner_steps']),
    Option('inner_lr', 'inner step size (default: published)', float, optional=True),
    Option('inner_opt', 'inner optimizer: sgd, adam, or adam0 (Adam with beta1 = 0) (default: published, else sgd)',
           str, default='sgd', choices=OPTIMIZERS),
)
"""The options of every learner that adapts by inner steps."""

REMAT = Option('remat', 'rematerialise inner steps (less memory)', bool, default=False)

# Finn et al. (2017), section 5.1: inner SGD 0.01, one inner step, 25 tasks a meta-batch, Adam 1e-3, 70,000 steps.
SINUSOID_FINN2017 = dict(meta_batch=25, steps=70_000, inner_steps=1, inner_lr=0.01, inner_opt='sgd', outer_lr=1e-3,
                         outer_opt='adam', outer_decay=False)
# Finn et al. (2017), section 5.2, 5-way Omniglot: inner SGD 0.4, one inner step, meta-batch 32, Adam 1e-3 and
# 60,000 meta-steps; their code trains on K query examples per class and tests after 10 inner steps.
OMNIGLOT_FINN2017 = dict(meta_batch=32, steps=60_000, inner_steps=1, eval_inner_steps=10, inner_lr=0.4,
                         inner_opt='sgd', outer_lr=1e-3, outer_opt='adam', outer_decay=False,
                         queries=lambda f: f['shots'])


def inner_optimizer(c: Config) -> optax.GradientTransformation:
  """The inner optimizer of a resolved config (`inner_opt` at `inner_lr`)."""
  if c.inner_lr is None:
    raise ValueError(f'{c.algo} on {c.dataset} needs inner_lr (--inner-lr)')
  return optimizer(c.inner_opt, c.inner_lr)


def predictor_recipe(make: Callable[[Config, ApplyFn, LossFn, MetricsFn | None], MetaLearner]
                     ) -> Callable[[Config, Data], Recipe]:
  """A registry `build` for a learner of the dataset's predictor: `make(config, apply_fn, loss_fn, metrics_fn)`.
  The learner trains and is tested at the same ways, as the predictor's head fixes them."""

  def build(c: Config, data: Data) -> Recipe:
    model = data.model('predictor')
    learner = make(c, model.apply, data.loss_fn, data.metrics_fn)
    return Recipe(lambda key: model.init(key, data.example_x), learner, learner)

  return build
