"""The meta-learner interface: a NamedTuple of pure functions, as optax's `GradientTransformation`.

One interface for every task kind; what `support` and `x` are depends on the kind:
- few-shot classification and regression (`Task`): `adapt(params, task.support)`, `predict(adapted, query.x)`.
- function regression (`Task` with masked splits, `jmeta.datasets.gp_functions`): the same; the support set is the
  context points, the query set the targets, and losses average over real points (`jmeta.losses.masked`). A neural
  process's `adapt` is its encoder and aggregation, its `predict` the decoder.
- sequences (`jmeta.SequenceTask`): the sequence is both support and query. `adapt(params, prefix)` returns the
  learner's state after reading a prefix (an empty one for training), `predict(state, sequence)` the logits
  `[steps, classes]` of a whole sequence in one `lax.scan`, and `loss(params, sequence)` their cross-entropy.
- environments (`jmeta.envs`): an RL learner needs one more pure function, `jmeta.rollout(env, policy, ...)`, to
  gather data; its support is a batch of `Trajectory` from the task (MAML-RL adapts on trajectories of the
  pre-update policy) and its `loss(params, (env_params, key))` rolls out inside, so it stays differentiable and
  vmappable over tasks. RL^2's `adapt` is the identity: it learns inside one rollout through the policy's carry.
`jmeta.meta_step`, `fit` and `evaluator` take `Task` and `SequenceTask` meta-batches (`jmeta.sequence_learner` and
`jmeta.mann` are the sequence learners); RL learners call `jax.vmap(learner.loss)` and an optax update directly.
"""

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
