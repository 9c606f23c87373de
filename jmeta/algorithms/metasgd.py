"""Meta-SGD: meta-learn the initialisation and a step size (and sign) for every parameter."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jmeta import losses
from jmeta.algorithms._gradient_based import (INNER_OPTIONS, OMNIGLOT_FINN2017, REMAT, SINUSOID_FINN2017, LossFn,
                                              MetricsFn, gradient_based, predictor_recipe)
from jmeta.base import ApplyFn, MetaLearner, Params
from jmeta.checks import check_learning_rate
from jmeta.experiments import Algorithm, Published, register_algorithm
from jmeta.inner import Mask, partition, resolve_mask


class MetaSGDParams(NamedTuple):
  """Meta-SGD's meta-parameters: the model's initialisation and `lr`, a step size per parameter (same shapes)."""
  model: Params
  lr: Params


def scale_by_learned_lr(lr: Params) -> optax.GradientTransformation:
  """The inner update `-lr * grad`, elementwise, with `lr` shaped like the params (differentiable in `lr`)."""

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda a, g: -a * g, lr, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def metasgd(
    apply_fn: ApplyFn,
    steps: int = 1,
    *,
    lr_init: float | tuple[float, float] = (0.005, 0.1),
    first_order: bool = False,
    mask: Mask | None = None,
    loss_fn: LossFn = losses.mse,
    metrics_fn: MetricsFn | None = None,
    remat: bool = False,
) -> MetaLearner:
  """Meta-SGD (Li, Zhou, Chen & Li, 2017, arXiv:1707.09835).

  The inner step is `theta - alpha * grad` with `alpha` a meta-learned array per parameter, so the outer loop
  learns the direction and size of the update as well as the initialisation. Params are `MetaSGDParams`.

  Args:
    apply_fn: `apply_fn(params, x) -> predictions`.
    steps: inner steps during meta-training (the paper uses one).
    lr_init: initial step sizes: a constant, or `(low, high)` to draw them uniformly (the paper's [0.005, 0.1]).
    first_order, mask, loss_fn, metrics_fn, remat: as in `jmeta.maml`.
  """
  if isinstance(lr_init, tuple):
    low, high = (check_learning_rate(v, 'lr_init bounds') for v in lr_init)
    if low >= high:
      raise ValueError(f'lr_init=(low, high) needs low < high; got {lr_init}')
  else:
    low = high = check_learning_rate(lr_init, 'lr_init')

  def init(key: jax.Array, model_params: Params) -> MetaSGDParams:
    leaves, treedef = jax.tree.flatten(model_params)
    keys = jax.random.split(key, len(leaves))
    lrs = [jax.random.uniform(k, jnp.shape(p), jnp.result_type(p), low, high) for k, p in zip(keys, leaves)]
    return MetaSGDParams(model_params, jax.tree.unflatten(treedef, lrs))

  def unpack(params: MetaSGDParams):
    lr, _ = partition(params.lr, resolve_mask(mask, params.model))
    return params.model, scale_by_learned_lr(lr)

  return gradient_based(apply_fn, init=init, unpack=unpack, steps=steps, first_order=first_order, mask=mask,
                        loss_fn=loss_fn, metrics_fn=metrics_fn, remat=remat)


_STEPS = tuple(o for o in INNER_OPTIONS if o.name in ('inner_steps', 'eval_inner_steps'))  # the step sizes are learned

register_algorithm(Algorithm(
    name='metasgd', family='gradient-based', title='Meta-SGD', paper='Li, Zhou, Chen & Li, 2017, arXiv:1707.09835',
    options=_STEPS + (REMAT,),
    # Li et al. (2017): one inner step with learned step sizes initialised in [0.005, 0.1]. The paper gives no
    # sinusoid budget, so it gets Finn et al.'s; on Omniglot Finn et al.'s too, but the learned step is taken
    # once at test time, as in training.
    published={'sinusoid': SINUSOID_FINN2017, 'omniglot': {**OMNIGLOT_FINN2017, 'eval_inner_steps': 1}},
    build=predictor_recipe(lambda c, apply_fn, loss_fn, metrics_fn: metasgd(
        apply_fn, c.inner_steps, remat=c.remat, loss_fn=loss_fn, metrics_fn=metrics_fn)),
    fixed_ways=True,
    results=(
        *(Published('sinusoid', {'shots': k, 'inner_steps': 1}, 'mse', v, 'Li et al. (2017), table 1')
          for k, v in ((5, 0.90), (10, 0.53), (20, 0.31))),
        Published('omniglot', {'ways': 5, 'shots': 1}, 'accuracy %', 99.53, 'Li et al. (2017), table 1'),
        Published('omniglot', {'ways': 5, 'shots': 5}, 'accuracy %', 99.93, 'Li et al. (2017), table 1'),
    )))
