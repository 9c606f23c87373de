"""MAML, first-order MAML and ANIL."""

from __future__ import annotations

import optax

from jmeta import losses
from jmeta.algorithms._gradient_based import (INNER_OPTIONS, OMNIGLOT_FINN2017, REMAT, SINUSOID_FINN2017, LossFn,
                                              MetricsFn, gradient_based, inner_optimizer, predictor_recipe)
from jmeta.base import ApplyFn, MetaLearner
from jmeta.experiments import Algorithm, Published, register_algorithm
from jmeta.inner import Mask, as_optimizer, path_mask


def maml(
    apply_fn: ApplyFn,
    inner_opt: optax.GradientTransformation | float = 0.01,
    steps: int = 1,
    *,
    first_order: bool = False,
    mask: Mask | None = None,
    loss_fn: LossFn = losses.mse,
    metrics_fn: MetricsFn | None = None,
    remat: bool = False,
) -> MetaLearner:
  """Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, 2017, arXiv:1703.03400).

  The meta-parameters are the model's initialisation. The meta-loss of a task is the query loss after `steps`
  steps of `inner_opt` on the support set; its gradient is exact second order (`jax.grad` through the scanned
  inner loop) unless `first_order=True`.

  Args:
    apply_fn: `apply_fn(params, x) -> predictions` for `x: [examples, *input_shape]`.
    inner_opt: an optax transformation, or a step size for plain SGD. To differentiate through Adam use
      `optax.adam(lr, eps_root=1e-8)`: with `eps_root=0` the second-order gradient is NaN wherever an inner
      gradient is exactly zero.
    steps: inner steps during meta-training (>= 1); `adapt(..., steps=S)` overrides it.
    first_order: drop the second-order terms (first-order MAML).
    mask: booleans shaped like the params, or a function of the params returning them; only True leaves are
      adapted in the inner loop (see `anil`).
    loss_fn: `(predictions, targets) -> scalar`, used in both loops.
    metrics_fn: extra `(predictions, targets) -> {name: scalar}` reported on the query set.
    remat: `jax.checkpoint` each inner step so memory does not grow with `steps`.
  """
  opt = as_optimizer(inner_opt)
  return gradient_based(
      apply_fn, init=lambda key, model_params: model_params, unpack=lambda params: (params, opt), steps=steps,
      first_order=first_order, mask=mask, loss_fn=loss_fn, metrics_fn=metrics_fn, remat=remat)


def fomaml(apply_fn: ApplyFn, inner_opt: optax.GradientTransformation | float = 0.01, steps: int = 1,
           **kwargs) -> MetaLearner:
  """First-order MAML (Finn et al., 2017, arXiv:1703.03400, section 5.2): `maml(..., first_order=True)`."""
  return maml(apply_fn, inner_opt, steps, first_order=True, **kwargs)


def anil(apply_fn: ApplyFn, mask: Mask, inner_opt: optax.GradientTransformation | float = 0.01, steps: int = 1,
         **kwargs) -> MetaLearner:
  """Almost No Inner Loop (Raghu et al., 2020, arXiv:1909.09157): MAML adapting only the `mask`ed parameters.

  `mask` selects the leaves the inner loop adapts, e.g. `jmeta.path_mask('head')` for the classifier head; the
  others are meta-learned but frozen within a task.
  """
  if mask is None:
    raise ValueError('anil needs a mask selecting the parameters to adapt, e.g. jmeta.path_mask("head")')
  return maml(apply_fn, inner_opt, steps, mask=mask, **kwargs)


def _recipe(*, first_order: bool = False, head_only: bool = False):
  return predictor_recipe(lambda c, apply_fn, loss_fn, metrics_fn: maml(
      apply_fn, inner_optimizer(c), c.inner_steps, first_order=first_order,
      mask=path_mask('head') if head_only else None, remat=c.remat, loss_fn=loss_fn, metrics_fn=metrics_fn))


# Finn et al. (2017), section 5.2, mini-ImageNet: 32 filters, 5 inner steps of 0.01 (10 at test), meta-batch 4 for
# 1-shot and 2 for 5-shot, 15 queries, Adam 1e-3, 60,000 meta-steps.
MINI_IMAGENET_FINN2017 = dict(meta_batch=lambda f: 4 if f['shots'] == 1 else 2, steps=60_000, inner_steps=5,
                              eval_inner_steps=10, inner_lr=0.01, inner_opt='sgd', outer_lr=1e-3, outer_opt='adam',
                              outer_decay=False, queries=15, filters=32)
_PUBLISHED = {'sinusoid': SINUSOID_FINN2017, 'omniglot': OMNIGLOT_FINN2017, 'mini-imagenet': MINI_IMAGENET_FINN2017}

register_algorithm(Algorithm(
    name='maml', family='gradient-based', title='MAML', paper='Finn, Abbeel & Levine, 2017, arXiv:1703.03400',
    options=INNER_OPTIONS + (REMAT,), published=_PUBLISHED, build=_recipe(), fixed_ways=True,
    results=(
        # Li et al. (2017), table 1: MSE after one inner step.
        *(Published('sinusoid', {'shots': k, 'inner_steps': 1}, 'mse', v, 'Li et al. (2017), table 1')
          for k, v in ((5, 1.13), (10, 0.77), (20, 0.48))),
        Published('omniglot', {'ways': 5, 'shots': 1}, 'accuracy %', 98.7, 'Finn et al. (2017), table 1'),
        Published('omniglot', {'ways': 5, 'shots': 5}, 'accuracy %', 99.9, 'Finn et al. (2017), table 1'),
    )))
register_algorithm(Algorithm(
    name='fomaml', family='gradient-based', title='first-order MAML',
    paper='Finn, Abbeel & Levine, 2017, arXiv:1703.03400, section 5.2', options=INNER_OPTIONS + (REMAT,),
    published=_PUBLISHED, build=_recipe(first_order=True), fixed_ways=True,
    results=(Published('omniglot', {'ways': 5, 'shots': 1}, 'accuracy %', 98.3, 'Finn et al. (2017), table 1'),
             Published('omniglot', {'ways': 5, 'shots': 5}, 'accuracy %', 99.2, 'Finn et al. (2017), table 1'))))
# Raghu et al. (2020) give no Omniglot or sinusoid settings of their own; ANIL takes MAML's.
register_algorithm(Algorithm(
    name='anil', family='gradient-based', title='ANIL', paper='Raghu, Raghu, Bengio & Vinyals, 2020, '
    'arXiv:1909.09157', options=INNER_OPTIONS + (REMAT,), published=_PUBLISHED, build=_recipe(head_only=True),
    fixed_ways=True))
