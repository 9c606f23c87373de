"""The meta-step: per-task meta-gradients under `vmap`, averaged, then an optax outer update."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jmeta.base import MetaLearner, Metrics, Params
from jmeta.checks import check_positive_int
from jmeta.tasks import Task, check_meta_batch


class TrainState(NamedTuple):
  """Everything meta-training carries from step to step, as one pytree.

  Attributes:
    params: the meta-parameters.
    opt_state: the outer optimizer's state.
    step: meta-steps taken, an int32 scalar.
    key: the PRNG key for the next meta-batch (a raw uint32 key, `jax.random.PRNGKey`).
  """
  params: Params
  opt_state: optax.OptState
  step: jax.Array
  key: jax.Array


def init_state(learner: MetaLearner, outer_opt: optax.GradientTransformation, key: jax.Array,
               model_params: Params) -> TrainState:
  """The state before the first meta-step: `learner.init` on a split of `key`, the rest kept for sampling."""
  key_init, key_run = jax.random.split(key)
  params = learner.init(key_init, model_params)
  return TrainState(params, outer_opt.init(params), jnp.zeros((), jnp.int32), key_run)


MetaStep = Callable[[TrainState, Task], tuple[TrainState, Metrics]]


def meta_step(learner: MetaLearner, outer_opt: optax.GradientTransformation, task_spec: Task | None = None, *,
              vmap_size: int | None = None, grad_of_mean: bool = False) -> MetaStep:
  """`step(state, meta_batch) -> (state, metrics)`, jittable, for a meta-batch `[tasks, ...]`.

  Metrics are the learner's, averaged over tasks, plus `grad_norm` of the averaged meta-gradient. Give
  `task_spec` (one task, or `jmeta.task_spec(task)`) to have a single task passed by mistake rejected.
  `vmap_size` bounds how many tasks are vmapped at once: the meta-batch is then mapped (`lax.map`) over chunks
  of that many tasks, so a large meta-batch holds only one chunk's intermediates; the result is the same. Leave
  it unset when the meta-batch is sharded over devices, where each device's share is already a chunk.

  `grad_of_mean=True` says the learner's `meta_grad` is `jax.grad(loss)` (true of MAML, the metric learners and the
  sequence learners; not of Reptile or first-order MAML): the step then differentiates the meta-batch's mean loss,
  equal by linearity, and never holds one gradient per task. Under `vmap` each task's gradient is otherwise
  accumulated on its own through the backward pass: for the MANN and LSTM of Santoro et al. over 50-step episodes
  that gradient took 2.4 and 4.9 times as long on a CPU (`python benchmarks/memory.py --profile-step`).
  """
  if vmap_size is not None:
    vmap_size = check_positive_int(vmap_size, 'vmap_size')

  def map_tasks(fn, batch):
    if vmap_size is None:
      return jax.vmap(fn)(batch)
    return jax.lax.map(fn, batch, batch_size=vmap_size)  # vmaps any remainder (or a smaller batch) in one go

  def step(state: TrainState, batch: Task) -> tuple[TrainState, Metrics]:
    check_meta_batch(batch, task_spec)
    if grad_of_mean:
      def mean_loss(params):
        values, metrics = map_tasks(lambda task: learner.loss(params, task), batch)
        return jnp.mean(values), metrics
      grads, metrics = jax.grad(mean_loss, has_aux=True)(state.params)
    else:
      grads, metrics = map_tasks(lambda task: learner.meta_grad(state.params, task), batch)
      grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    metrics = {k: jnp.mean(v) for k, v in metrics.items()}
    metrics['grad_norm'] = optax.tree.norm(grads)
    updates, opt_state = outer_opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, state.step + 1, state.key), metrics

  return step


def sampled_steps(step: MetaStep, sample: Callable[[jax.Array], Task], meta_batch: int, num_steps: int
                  ) -> Callable[[TrainState], tuple[TrainState, Metrics]]:
  """`num_steps` meta-steps in one `lax.scan`, each on a fresh meta-batch drawn from `state.key`.

  Returns `run(state) -> (state, metrics)` with metrics stacked over steps, `[num_steps]` each.
  """

  def body(state: TrainState, _):
    key, key_batch = jax.random.split(state.key)
    batch = jax.vmap(sample)(jax.random.split(key_batch, meta_batch))
    return step(state._replace(key=key), batch)

  return lambda state: jax.lax.scan(body, state, length=num_steps)
