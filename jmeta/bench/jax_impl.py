"""jmeta's meta-steps for the benchmark cases: 'jmeta' (one jit, `vmap` over tasks) and 'jmeta_loop' (a jitted
per-task meta-gradient called in a Python loop over tasks, then a jitted outer update)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmeta import algorithms, losses
from jmeta.bench.cases import Case
from jmeta.models import conv4
from jmeta.models.mlp import MLP
from jmeta.tasks import Split, Task
from jmeta.training.meta_step import TrainState, meta_step

IMPLS = ('jmeta', 'jmeta_loop')


class Model(NamedTuple):
  init: Callable[[jax.Array, jax.Array], Any]
  apply: Callable[[Any, jax.Array], jax.Array]


def model(case: Case, conv: type | None = None) -> Model:
  """The case's network as pure functions; `conv` replaces conv4's convolution class (e.g. `flax.linen.Conv`)."""
  if case.kind == 'sinusoid':
    mlp = MLP(hidden=(40, 40), out=1)
    return Model(lambda key, x: mlp.init(key, x)['params'], lambda p, x: mlp.apply({'params': p}, x))
  kw = {} if conv is None else {'conv': conv}
  if case.kind == 'protonet':
    return Model(*conv4.functional(conv4.conv4_protonet(case.filters, case.blocks, **kw)))
  encoder = (conv4.conv4_protonet if case.pooled else conv4.conv4_maml)(case.filters, case.blocks, **kw)
  return Model(*conv4.functional(conv4.Classifier(encoder, case.ways)))


def learner(case: Case, apply: Callable) -> algorithms.MetaLearner:
  if case.kind == 'protonet':
    return algorithms.protonet(apply, case.ways)
  loss_fn = losses.mse if case.kind == 'sinusoid' else losses.cross_entropy
  return algorithms.maml(apply, case.inner_lr, case.inner_steps, first_order=case.first_order, loss_fn=loss_fn,
                         remat=case.remat)


def init_params(case: Case, data: dict[str, np.ndarray], seed: int = 0) -> Any:
  """The model's initial params, as NumPy arrays (so the PyTorch side can load the same weights)."""
  m = model(case)
  params = m.init(jax.random.PRNGKey(seed), jnp.asarray(data['support_x'][0]))
  return jax.tree.map(np.asarray, params)


def as_task(data: dict[str, Any]) -> Task:
  return Task(Split(data['support_x'], data['support_y']), Split(data['query_x'], data['query_y']))


def meta_loss_and_grad(case: Case, params: Any, data: dict[str, np.ndarray]) -> tuple[float, Any]:
  """The meta-loss (mean over tasks) and its gradient with respect to the model's params, as the step computes
  them; for checking the other implementations against."""
  lrn = learner(case, model(case).apply)

  def mean_loss(p, task):
    return jnp.mean(jax.vmap(lambda t: lrn.loss(lrn.init(None, p), t)[0])(task))

  loss, grads = jax.jit(jax.value_and_grad(mean_loss))(params, as_task(data))
  return float(loss), jax.tree.map(np.asarray, grads)


class Built(NamedTuple):
  """A ready step: `run()` takes one meta-step (updating the state it holds) and blocks until it is done."""
  run: Callable[[], None]
  compile_s: float
  xla_flops: float | None
  xla_memory_mb: float | None
  hlo_text: str | None = None


def _outer(case: Case) -> optax.GradientTransformation:
  return optax.adam(case.outer_lr)


def _analysis(compiled) -> tuple[float | None, float | None]:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost['flops']) if cost and 'flops' in cost else None
  mem = compiled.memory_analysis()
  mb = None
  if mem is not None:
    total = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
    mb = total / 2**20
  return flops, mb


def model_flops(case: Case, data: dict[str, np.ndarray]) -> float | None:
  """FLOPs of the step as XLA counts them for the plain formulation (`flax.linen.Conv`): the work the model
  asks for, whatever form a faster implementation gives it (patches copied for a matmul count no FLOPs here)."""
  import flax.linen as nn
  m = model(case, conv=nn.Conv)
  lrn = learner(case, m.apply)
  step = jax.jit(meta_step(lrn, _outer(case)))
  params = jax.eval_shape(lambda k, x: lrn.init(None, m.init(k, x)), jax.random.PRNGKey(0),
                          jnp.asarray(data['support_x'][0]))
  state = jax.eval_shape(lambda p: TrainState(p, _outer(case).init(p), jnp.zeros((), jnp.int32),
                                              jax.random.PRNGKey(0)), params)
  return _analysis(step.lower(state, as_task(data)).compile())[0]


def build(case: Case, impl: str, params: Any, data: dict[str, np.ndarray]) -> Built:
  """The step of `impl` ('jmeta' or 'jmeta_loop') from model `params` on the fixed meta-batch `data`."""
  import time
  lrn = learner(case, model(case).apply)
  outer = _outer(case)
  meta_params = lrn.init(None, jax.tree.map(jnp.asarray, params))
  task = jax.device_put(as_task(data))
  if impl == 'jmeta':
    state = TrainState(meta_params, outer.init(meta_params), jnp.zeros((), jnp.int32), jax.random.PRNGKey(0))
    step = jax.jit(meta_step(lrn, outer, vmap_size=case.vmap_size), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step.lower(state, task).compile()
    compile_s = time.perf_counter() - t0
    holder = [state]

    def run():
      holder[0], metrics = compiled(holder[0], task)
      jax.block_until_ready(holder[0])

    return Built(run, compile_s, *_analysis(compiled), compiled.as_text())

  if impl != 'jmeta_loop':
    raise ValueError(f'unknown jmeta implementation {impl!r}; expected one of {IMPLS}')
  tasks = [jax.tree.map(lambda a: a[i], task) for i in range(case.meta_batch)]
  task_grad = jax.jit(lambda p, t: lrn.meta_grad(p, t)[0])

  @jax.jit
  def update(params, opt_state, grads):
    mean = jax.tree.map(lambda *g: sum(g) / len(g), *grads)
    updates, opt_state = outer.update(mean, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = outer.init(meta_params)
  t0 = time.perf_counter()
  grad_c = task_grad.lower(meta_params, tasks[0]).compile()
  grads_like = [jax.eval_shape(task_grad, meta_params, tasks[0])] * len(tasks)
  update_c = update.lower(meta_params, opt_state, grads_like).compile()
  compile_s = time.perf_counter() - t0
  holder = [meta_params, opt_state]

  def run():
    grads = [grad_c(holder[0], t) for t in tasks]
    holder[0], holder[1] = update_c(holder[0], holder[1], grads)
    jax.block_until_ready(holder[0])

  flops, mb = _analysis(grad_c)
  return Built(run, compile_s, None if flops is None else flops * len(tasks), mb)
