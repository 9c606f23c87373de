"""Meta-training learned optimizers on a task family: truncated backpropagation through unrolls (Andrychowicz et
al., 2016, arXiv:1606.04474) and persistent or antithetic evolution strategies (Vicol, Metz & Sohl-Dickstein, 2021,
arXiv:2112.13835; evosax's `PersistentES`).

An inner training in progress is an `Unroll` (its task, parameters, optimizer state, step and key); `unroll` runs
`length` steps of it in one `lax.scan`. Both meta-trainers keep a batch of unrolls that persists across truncations
and restart each on a fresh task once it has run `horizon` steps. `make_opt(meta_params)` builds the optimizer
(e.g. `lstm_optimizer`), so the same code trains either design.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jmeta.checks import check_positive_int, check_positive_number
from jmeta.optimizers.tasks import InnerTask, TaskFamily

PyTree = Any
MakeOpt = Callable[[PyTree], optax.GradientTransformation]


class Unroll(NamedTuple):
  """One inner training: `task`, its `params` and optimizer state `opt_state` after `step` steps; `key` for what
  comes next (batches, loss noise)."""
  task: InnerTask
  params: PyTree
  opt_state: PyTree
  step: jax.Array
  key: jax.Array


def start(family: TaskFamily, opt: optax.GradientTransformation, key: jax.Array) -> Unroll:
  """A fresh task of `family` at its initial parameters."""
  k_task, k_init, k_run = jax.random.split(key, 3)
  task = family.sample(k_task)
  params = task.init(k_init)
  return Unroll(task, params, opt.init(params), jnp.zeros((), jnp.int32), k_run)


def unroll(opt: optax.GradientTransformation, state: Unroll, length: int, *,
           second_order: bool = False) -> tuple[Unroll, jax.Array]:
  """`length` steps of `opt` from `state`: the new state and the training loss before each step, `[length]`.

  `second_order=False` treats the optimizee's gradients as constants when differentiating in the optimizer's
  parameters, as Andrychowicz et al. (2016, section 2) do; True keeps their derivatives (exact).
  """

  def step(s: Unroll, _):
    key, k_batch, k_loss = jax.random.split(s.key, 3)
    batch = s.task.batch(k_batch)
    loss, grads = jax.value_and_grad(s.task.loss)(s.params, k_loss, batch)
    if not second_order:
      grads = jax.lax.stop_gradient(grads)
    updates, opt_state = opt.update(grads, s.opt_state, s.params)
    return Unroll(s.task, optax.apply_updates(s.params, updates), opt_state, s.step + 1, key), loss

  return jax.lax.scan(step, state, None, length=length)


def curve(opt: optax.GradientTransformation, task: InnerTask, key: jax.Array, steps: int) -> jax.Array:
  """The training loss of `task` at each of `steps` steps of `opt` from `task.init`, then after the last: `[steps +
  1]`."""
  k_init, k_run = jax.random.split(key)
  params = task.init(k_init)
  state, losses = unroll(opt, Unroll(task, params, opt.init(params), jnp.zeros((), jnp.int32), k_run), steps)
  k_batch, k_loss = jax.random.split(state.key)
  last = task.loss(state.params, k_loss, task.batch(k_batch))
  return jnp.concatenate([losses, last[None]])


def _restart(family, opt, states: Unroll, key: jax.Array, horizon: int) -> Unroll:
  done = states.step >= horizon
  fresh = jax.vmap(lambda k: start(family, opt, k))(jax.random.split(key, done.shape[0]))
  pick = lambda new, old: jnp.where(jnp.reshape(done, done.shape + (1,) * (old.ndim - 1)), new, old)
  return jax.tree.map(pick, fresh, states)


def _check(truncation, horizon):
  truncation = check_positive_int(truncation, 'truncation')
  horizon = check_positive_int(horizon, 'horizon')
  if horizon % truncation:
    raise ValueError(f'horizon ({horizon}) must be a multiple of truncation ({truncation})')
  return truncation, horizon


class TBPTTState(NamedTuple):
  """Meta-parameters, the outer optimizer's state, the unrolls in progress `[tasks, ...]` and the outer step."""
  meta_params: PyTree
  outer_state: PyTree
  unrolls: Unroll
  step: jax.Array


def tbptt(family: TaskFamily, make_opt: MakeOpt, outer: optax.GradientTransformation, *, tasks: int = 8,
          truncation: int = 20, horizon: int = 100, second_order: bool = False, log_loss: bool = False):
  """Truncated backpropagation through unrolls (Andrychowicz et al., 2016): each meta-step runs `truncation` steps of
  `tasks` inner trainings (`vmap`), takes the gradient of their mean training loss over those steps in the
  optimizer's parameters, and carries the inner trainings on (without gradient) until `horizon` steps, when each
  restarts on a fresh task. The paper: 100 steps in truncations of 20.

  Returns:
    `(init(key, meta_params) -> TBPTTState, step(state, key) -> (state, metrics))`, pure; jit `step`.
  """
  truncation, horizon = _check(truncation, horizon)
  tasks = check_positive_int(tasks, 'tasks')

  def init(key: jax.Array, meta_params: PyTree) -> TBPTTState:
    opt = make_opt(meta_params)
    unrolls = jax.vmap(lambda k: start(family, opt, k))(jax.random.split(key, tasks))
    return TBPTTState(meta_params, outer.init(meta_params), unrolls, jnp.zeros((), jnp.int32))

  def meta_loss(meta_params, unrolls):
    opt = make_opt(meta_params)
    new, losses = jax.vmap(lambda s: unroll(opt, s, truncation, second_order=second_order))(unrolls)
    values = jnp.log(losses) if log_loss else losses
    return jnp.mean(values), (new, jnp.mean(losses))

  def step(state: TBPTTState, key: jax.Array):
    (value, (new, mean_loss)), grads = jax.value_and_grad(meta_loss, has_aux=True)(state.meta_params, state.unrolls)
    updates, outer_state = outer.update(grads, state.outer_state, state.meta_params)
    meta_params = optax.apply_updates(state.meta_params, updates)
    new = _restart(family, make_opt(meta_params), jax.lax.stop_gradient(new), key, horizon)
    metrics = {'meta_loss': value, 'loss': mean_loss, 'grad_norm': optax.tree.norm(grads)}
    return TBPTTState(meta_params, outer_state, new, state.step + 1), metrics

  return init, step


class ESState(NamedTuple):
  """evosax's strategy state (the mean meta-parameters, raveled, and the perturbation accumulators), the unrolls of
  the population `[population, ...]` and the meta-step."""
  es_state: Any
  unrolls: Unroll
  step: jax.Array


def persistent_es(family: TaskFamily, make_opt: MakeOpt, example_meta_params: PyTree, *, population: int = 16,
                  truncation: int = 20, horizon: int = 100, std: float = 0.01, lr: float = 1e-3,
                  outer: optax.GradientTransformation | None = None, log_loss: bool = False):
  """Persistent evolution strategies (PES; Vicol et al., 2021, arXiv:2112.13835) with evosax's `PersistentES`:
  antithetic perturbations of the meta-parameters, each pair on one task, whose unrolls persist across truncations
  and whose accumulated perturbations weigh the fitness (the mean training loss over a truncation) so that the
  estimate is unbiased for the whole horizon. With `truncation == horizon` it is antithetic ES on full unrolls.
  No second derivatives are taken. The outer optimizer defaults to Adam at `lr`.

  Returns:
    `(init(key, meta_params) -> ESState, step(state, key) -> (state, metrics), mean(state) -> meta_params)`.
  """
  from evosax.algorithms import PersistentES  # Lazy: only ES meta-training pays for its import.
  truncation, horizon = _check(truncation, horizon)
  population = check_positive_int(population, 'population')
  if population % 2:
    raise ValueError(f'persistent_es: population must be even (antithetic pairs); got {population}')
  std = check_positive_number(std, 'std')
  es = PersistentES(population, example_meta_params, optimizer=outer or optax.adam(lr),
                    std_schedule=optax.constant_schedule(std))
  params = es.default_params.replace(T=horizon, K=truncation)
  half = population // 2

  def starts(key):
    opt = make_opt(example_meta_params)
    pairs = jax.vmap(lambda k: start(family, opt, k))(jax.random.split(key, half))
    return jax.tree.map(lambda x: jnp.concatenate([x, x]), pairs)  # member i and i + half: one task, +/- noise

  # evosax's state has float leaves that a step turns from weakly to strongly typed and back; all strong, a jitted
  # step compiles once instead of three times.
  strong = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, x.dtype), tree)  # noqa: E731

  def init(key: jax.Array, meta_params: PyTree) -> ESState:
    k_es, k_unroll = jax.random.split(key)
    return strong(ESState(es.init(k_es, meta_params, params), starts(k_unroll), jnp.zeros((), jnp.int32)))

  def fitness(member, s: Unroll):
    new, losses = unroll(make_opt(member), s, truncation)
    return (jnp.mean(jnp.log(losses)) if log_loss else jnp.mean(losses)), new, jnp.mean(losses)

  def step(state: ESState, key: jax.Array):
    k_ask, k_tell, k_new = jax.random.split(key, 3)
    members, es_state = es.ask(k_ask, state.es_state, params)
    values, new, losses = jax.vmap(fitness)(members, state.unrolls)
    es_state, _ = es.tell(k_tell, members, values, es_state, params)
    done = new.step >= horizon
    fresh = starts(k_new)
    new = jax.tree.map(lambda a, b: jnp.where(jnp.reshape(done, done.shape + (1,) * (b.ndim - 1)), a, b), fresh, new)
    return strong(ESState(es_state, new, state.step + 1)), {'meta_loss': jnp.mean(values), 'loss': jnp.mean(losses)}

  def mean(state: ESState) -> PyTree:
    return es.get_mean(state.es_state)

  return init, step, mean
