"""The meta-learner interface: a NamedTuple of pure functions, as optax's `GradientTransformation`."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

import jax

from jmeta.tasks import Split, Task

PyTree = Any
Params = PyTree
Metrics = dict[str, jax.Array]
ApplyFn = Callable[[Params, jax.Array], jax.Array]
"""`apply_fn(params, x) -> predictions` for a batch `x: [examples, *input_shape]`."""


class InitFn(Protocol):

  def __call__(self, key: jax.Array, model_params: Params) -> Params:
    """Meta-parameters (what the outer loop learns) from a model's initial parameters."""


class AdaptFn(Protocol):

  def __call__(self, params: Params, support: Split, **kwargs) -> PyTree:
    """Task-specific state from the support set: fast weights, prototypes, a memory..."""


class PredictFn(Protocol):

  def __call__(self, adapted: PyTree, x: jax.Array) -> jax.Array:
    """Predictions for `x: [examples, *input_shape]` from what `adapt` returned."""


class LossFn(Protocol):

  def __call__(self, params: Params, task: Task) -> tuple[jax.Array, Metrics]:
    """The meta-training loss of one task (a scalar) and metrics (scalars)."""


class GradFn(Protocol):

  def __call__(self, params: Params, task: Task) -> tuple[Params, Metrics]:
    """The direction the outer optimizer descends for one task, shaped like `params`, and metrics."""


class MetaLearner(NamedTuple):
  """A meta-learner defined for one task; batch it with `jax.vmap`.

  Attributes:
    init: `(key, model_params) -> params`, the meta-parameters.
    adapt: `(params, support) -> adapted`, the inner loop (or its analogue for metric learners).
    predict: `(adapted, x) -> predictions`.
    loss: `(params, task) -> (loss, metrics)`, the per-task meta-loss.
    meta_grad: `(params, task) -> (grads, metrics)`, what the outer optimizer follows: `jax.grad(loss)` for
      gradient-based meta-learners, the displacement toward the adapted weights for Reptile.
  """
  init: InitFn
  adapt: AdaptFn
  predict: PredictFn
  loss: LossFn
  meta_grad: GradFn
