"""The inner loop shared by the optimization-based meta-learners: optax steps in a `lax.scan`."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jmeta.base import Params, PyTree
from jmeta.checks import check_learning_rate, check_positive_int

Mask = PyTree | Callable[[Params], PyTree]
"""A pytree of booleans shaped like the params (True: adapted in the inner loop), or a function building it."""


def as_optimizer(opt: optax.GradientTransformation | float, name: str = 'inner_opt') -> optax.GradientTransformation:
  """`opt` itself, or plain SGD when `opt` is a step size (checked to be positive and finite)."""
  if isinstance(opt, optax.GradientTransformation):
    return opt
  return optax.sgd(check_learning_rate(opt, name))


def resolve_mask(mask: Mask | None, params: Params) -> PyTree | None:
  """The boolean mask for `params`, or None when every leaf is adapted."""
  if mask is None:
    return None
  mask = mask(params) if callable(mask) else mask
  try:
    jax.tree.map(lambda m, p: None, mask, params)
  except ValueError as e:
    raise ValueError(f'the mask must have the structure of the params pytree: {e}') from None
  if not any(bool(m) for m in jax.tree.leaves(mask)):
    raise ValueError('the mask selects no parameter for the inner loop; at least one leaf must be True')
  return mask


def partition(params: Params, mask: PyTree | None) -> tuple[Params, Params]:
  """Splits `params` into (adapted, frozen) trees of the same structure, with None where a leaf is absent."""
  if mask is None:
    return params, jax.tree.map(lambda _: None, params)
  adapted = jax.tree.map(lambda m, p: p if m else None, mask, params)
  frozen = jax.tree.map(lambda m, p: None if m else p, mask, params)
  return adapted, frozen


def combine(adapted: Params, frozen: Params) -> Params:
  """Inverse of `partition`."""
  return jax.tree.map(lambda a, f: f if a is None else a, adapted, frozen, is_leaf=lambda x: x is None)


def inner_loop(
    loss_fn: Callable[..., jax.Array],
    params: Params,
    opt: optax.GradientTransformation,
    steps: int,
    *,
    mask: PyTree | None = None,
    first_order: bool = False,
    remat: bool = False,
    batches: PyTree | None = None,
) -> tuple[Params, jax.Array]:
  """Takes `steps` steps of `opt` on `loss_fn` from `params`, differentiably.

  Args:
    loss_fn: `params -> scalar`, the loss on the support set; with `batches`, `(params, batch) -> scalar`.
    params: where the loop starts; gradients flow back to it through every step.
    opt: the inner optimizer (its state starts fresh for each task).
    steps: number of steps, a Python int >= 0; the scan compiles once whatever its value.
    mask: booleans shaped like `params`; only True leaves are updated (ANIL); None updates all.
    first_order: stop gradients through the inner gradients (first-order MAML).
    remat: recompute each step in the backward pass (`jax.checkpoint`), so that memory does not grow with
      `steps`.
    batches: one minibatch per step, stacked on a leading axis of size `steps`; step i passes slice i to
      `loss_fn`. None: every step sees the same data through `loss_fn` alone.

  Returns:
    The adapted params and the loss before each step, `[steps]`.
  """
  check_positive_int(steps, 'inner steps', minimum=0)
  if batches is not None:
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(batches)}
    if sizes != {steps}:
      raise ValueError(f'inner_loop: batches need a leading axis of {steps} (one minibatch per step); got '
                       f'leading sizes {sorted(sizes, key=str)}')
  adapted, frozen = partition(params, mask)
  if batches is None:
    value_and_grad = jax.value_and_grad(lambda a, _: loss_fn(combine(a, frozen)))
  else:
    value_and_grad = jax.value_and_grad(lambda a, batch: loss_fn(combine(a, frozen), batch))

  def step(carry, batch):
    fast, opt_state = carry
    loss, grads = value_and_grad(fast, batch)
    if first_order:
      grads = jax.lax.stop_gradient(grads)
    updates, opt_state = opt.update(grads, opt_state, fast)
    return (optax.apply_updates(fast, updates), opt_state), loss

  if remat:
    step = jax.checkpoint(step)
  (adapted, _), losses = jax.lax.scan(step, (adapted, opt.init(adapted)), batches, length=steps)
  return combine(adapted, frozen), losses


def path_mask(*names: str) -> Callable[[Params], PyTree]:
  """A mask function selecting the leaves whose key path contains any of `names` (e.g. `path_mask('head')`)."""
  if not names:
    raise ValueError('path_mask needs at least one name to select')

  def mask(params: Params) -> PyTree:
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(n in jax.tree_util.keystr(path) for n in names), params)

  return mask
