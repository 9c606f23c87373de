"""PLATIPUS: probabilistic MAML (Finn, Xu & Levine, 2018, arXiv:1806.02817), for regression.

The initialisation is a Gaussian `N(mu, sigma**2)` with learned mean and (diagonal) variance. For a task with
support set `D_tr` and query set `D_test`:

- prior, conditioned on the support set: `p(theta | D_tr) = N(mu - gamma_p grad_mu L(mu, D_tr), sigma**2)`;
- inference network, conditioned on the query set (training only): `q(theta | D_test) = N(mu - gamma_q grad_mu
  L(mu, D_test), v_q)`;
- adaptation: `phi = theta - alpha grad_theta L(theta, D_tr)` (`steps` steps of the inner optimizer);
- meta-training (Algorithm 1) draws `theta ~ q` by reparameterisation and minimises the negative variational lower
  bound `-log p(y_test | x_test, phi) + KL(q || p)`; meta-testing (Algorithm 2) draws `theta ~ p`, adapts each
  draw and mixes the adapted models.

`L` is the squared error in the inner steps (MAML's). Each adapted model predicts a Gaussian with a learned noise
level, so the bound's likelihood and the predictive are proper densities; the predictive of a task is the
equally weighted mixture over `samples` adapted models. The Gaussians' densities and KL are closed forms
(`jmeta.losses.normal_log_prob`, `normal_kl`): distrax 0.1.9 and TensorFlow Probability 0.25.0's JAX substrate,
the newest releases, fail to import under jax 0.10.2 (`jax.interpreters.xla.pytype_aval_mappings` is gone).

Randomness comes from explicit keys: `adapt(..., key=)` and `loss(..., key=)`. Without one, the key is
`jmeta.algorithms.neural_process.data_key` of the task's points, so `loss(params, task)` stays a pure function of
its arguments under `jmeta.meta_step` and `jmeta.evaluator`, freshly random for each fresh task.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax

from jmeta import losses
from jmeta.algorithms._gradient_based import INNER_OPTIONS, REMAT, SINUSOID_FINN2017, inner_optimizer, split_loss
from jmeta.algorithms.neural_process import data_key, predictive_moments
from jmeta.base import ApplyFn, MetaLearner, Metrics, Params
from jmeta.checks import check_positive_int, check_positive_number
from jmeta.inner import as_optimizer, inner_loop
from jmeta.tasks import Split, Task, check_task, real


class PlatipusParams(NamedTuple):
  """PLATIPUS' meta-parameters.

  Attributes:
    mean: `mu`, the model's parameters (the prior's mean before the support-set step).
    log_std: `log sigma`, shaped like `mean`: the prior's standard deviations.
    log_q_std: `log sqrt(v_q)`, shaped like `mean`: the inference network's standard deviations.
    gamma_p, gamma_q: scalars, the learned step sizes of the prior's and the inference network's gradient step.
    log_noise: scalar, the log standard deviation of the observation noise of every adapted model.
  """
  mean: Params
  log_std: Params
  log_q_std: Params
  gamma_p: jax.Array
  gamma_q: jax.Array
  log_noise: jax.Array


class PlatipusState(NamedTuple):
  """What `adapt` returns: `fast`, the adapted models stacked on a leading `[samples]` axis of every leaf, and
  `noise`, their observation noise's standard deviation (a scalar)."""
  fast: Params
  noise: jax.Array


def tree_normal(key: jax.Array, tree: Params) -> Params:
  """Standard normal draws shaped like `tree`: one draw of all its elements from `key`, raveled and split back
  (one random-bits program to compile, not one per leaf)."""
  flat, unravel = jax.flatten_util.ravel_pytree(tree)
  return unravel(jax.random.normal(key, flat.shape, flat.dtype))


def gaussian_kl(loc_q: Params, log_std_q: Params, loc_p: Params, log_std_p: Params) -> jax.Array:
  """`KL(N(loc_q, diag(exp(2 log_std_q))) || N(loc_p, diag(exp(2 log_std_p))))` over every leaf, a scalar."""
  terms = jax.tree.map(lambda mq, sq, mp, sp: jnp.sum(losses.normal_kl(mq, jnp.exp(sq), mp, jnp.exp(sp))),
                       loc_q, log_std_q, loc_p, log_std_p)
  return sum(jax.tree.leaves(terms))


def platipus(
    apply_fn: ApplyFn,
    inner_opt: optax.GradientTransformation | float = 0.01,
    steps: int = 1,
    *,
    samples: int = 10,
    train_samples: int = 1,
    kl_weight: float = 1.0,
    init_std: float = 0.05,
    init_noise: float = 1.0,
    init_gamma: float | None = None,
    remat: bool = False,
) -> MetaLearner:
  """Probabilistic model-agnostic meta-learning (Finn, Xu & Levine, 2018, arXiv:1806.02817) as a `MetaLearner`.

  Args:
    apply_fn: `apply_fn(params, x) -> [examples, y_dim]` means, for `x: [examples, *input_shape]`.
    inner_opt: the adaptation `phi = theta - alpha grad L(theta, D_tr)`: an optax transformation, or `alpha` for
      plain SGD.
    steps: adaptation steps while training (>= 1); `adapt(..., steps=S)` overrides it (>= 0).
    samples: adapted models mixed in the predictive (`adapt`'s default).
    train_samples: draws of `theta ~ q` averaged in the bound's likelihood term (the paper's Algorithm 1: one).
    kl_weight: weight of the KL term; 1 is the variational bound.
    init_std: the initial prior and inference standard deviations, `sigma` and `sqrt(v_q)`.
    init_noise: the initial standard deviation of the observation noise.
    init_gamma: the initial `gamma_p` and `gamma_q` (default: `inner_opt` if it is a step size, else 0.01).
    remat: `jax.checkpoint` each adaptation step.

  Returns:
    `init(key, model_params) -> PlatipusParams`: `mu` the model's parameters, `gamma_p = gamma_q = init_gamma`.
    `adapt(params, support, *, key=None, samples=samples, steps=steps) -> PlatipusState`: `samples` draws of
      `theta ~ p(theta | support)`, each adapted on `support` (Algorithm 2).
    `predict(state, x) -> [examples, samples, 2 * y_dim]`: per adapted model the means, then the noise's standard
      deviation: an equally weighted Gaussian mixture, as `jmeta.losses.gaussian_log_likelihood` scores it.
    `loss(params, task, *, key=None) -> (loss, metrics)`, per query point: `nll + kl_weight * KL(q || p) / n`
      with `nll` the mean Gaussian negative log-likelihood of the `n` real query points under the model adapted
      from `theta ~ q(theta | query)` (averaged over `train_samples` draws). Metrics: 'loss', 'nll', 'kl',
      'mse' (of that model on the query set), 'support_loss' (before adaptation), 'noise'.
    `meta_grad = jax.grad(loss, has_aux=True)`, through the reparameterised draws and the inner steps.
  """
  opt = as_optimizer(inner_opt)
  steps = check_positive_int(steps, 'steps (inner steps during meta-training)')
  samples = check_positive_int(samples, 'samples')
  train_samples = check_positive_int(train_samples, 'train_samples')
  kl_weight = check_positive_number(kl_weight, 'kl_weight')
  init_std = check_positive_number(init_std, 'init_std')
  init_noise = check_positive_number(init_noise, 'init_noise')
  if init_gamma is None:
    init_gamma = inner_opt if isinstance(inner_opt, (int, float)) else 0.01
  gamma0 = float(init_gamma)

  def check_split(split: Split, role: str) -> None:
    if jnp.ndim(split.y) != 2 or not jnp.issubdtype(jnp.result_type(split.y), jnp.floating):
      raise ValueError(f'platipus regresses: the {role} targets must be float [examples, y_dim]; got '
                       f'{jnp.result_type(split.y)} {jnp.shape(split.y)}')

  def mse(p: Params, split: Split) -> jax.Array:
    return split_loss(apply_fn, losses.mse, p, split)

  def step_mean(params: PlatipusParams, gamma: jax.Array, split: Split) -> Params:
    grads = jax.grad(mse)(params.mean, split)
    return jax.tree.map(lambda m, g: m - gamma * g, params.mean, grads)

  def adapt_one(theta: Params, support: Split, num_steps: int) -> tuple[Params, jax.Array]:
    return inner_loop(lambda p: mse(p, support), theta, opt, num_steps, remat=remat)

  def init(key: jax.Array, model_params: Params) -> PlatipusParams:
    del key
    dtype = jnp.result_type(jax.tree.leaves(model_params)[0])
    log_std = jax.tree.map(lambda x: jnp.full(jnp.shape(x), jnp.log(init_std), jnp.result_type(x)), model_params)
    scalar = lambda v: jnp.asarray(v, dtype)
    return PlatipusParams(model_params, log_std, log_std, scalar(gamma0), scalar(gamma0), scalar(jnp.log(init_noise)))

  def adapt(params: PlatipusParams, support: Split, *, key: jax.Array | None = None, samples: int = samples,
            steps: int = steps) -> PlatipusState:
    check_split(support, 'support')
    check_positive_int(samples, 'samples')
    key = data_key(support) if key is None else key
    prior_mean = step_mean(params, params.gamma_p, support)

    def one(k: jax.Array) -> Params:
      theta = jax.tree.map(lambda m, s, e: m + jnp.exp(s) * e, prior_mean, params.log_std,
                           tree_normal(k, prior_mean))
      return adapt_one(theta, support, steps)[0]

    return PlatipusState(jax.vmap(one)(jax.random.split(key, samples)), jnp.exp(params.log_noise))

  def predict(state: PlatipusState, x: jax.Array) -> jax.Array:
    means = jax.vmap(apply_fn, in_axes=(0, None))(state.fast, x)  # [samples, examples, y_dim]
    if means.ndim != 3:
      raise ValueError(f'platipus: apply_fn must return [examples, y_dim]; got {means.shape[1:]}')
    means = jnp.swapaxes(means, 0, 1)
    return jnp.concatenate([means, jnp.broadcast_to(state.noise, means.shape).astype(means.dtype)], axis=-1)

  def loss(params: PlatipusParams, task: Task, *, key: jax.Array | None = None) -> tuple[jax.Array, Metrics]:
    check_task(task, 'platipus task')
    check_split(task.support, 'support')
    check_split(task.query, 'query')
    key = data_key(task.support, task.query) if key is None else key
    q_mean = step_mean(params, params.gamma_q, task.query)
    p_mean = step_mean(params, params.gamma_p, task.support)
    noise = jnp.exp(params.log_noise)

    def one(k: jax.Array):
      theta = jax.tree.map(lambda m, s, e: m + jnp.exp(s) * e, q_mean, params.log_q_std, tree_normal(k, q_mean))
      fast, support_losses = adapt_one(theta, task.support, steps)
      means = apply_fn(fast, task.query.x)
      predictions = jnp.concatenate([means, jnp.broadcast_to(noise, means.shape).astype(means.dtype)], axis=-1)
      nll = losses.masked(losses.gaussian_nll)(predictions, task.query.y, task.query.mask)
      return nll, losses.masked(losses.mse)(means, task.query.y, task.query.mask), support_losses[0]

    nll, query_mse, support_loss = jax.tree.map(jnp.mean, jax.vmap(one)(jax.random.split(key, train_samples)))
    kl = gaussian_kl(q_mean, params.log_q_std, p_mean, params.log_std)
    count = jnp.maximum(jnp.sum(real(task.query)), 1).astype(kl.dtype)
    value = nll + kl_weight * kl / count
    return value, {'loss': value, 'nll': nll, 'kl': kl, 'mse': query_mse, 'support_loss': support_loss,
                   'noise': noise}

  return MetaLearner(init=init, adapt=adapt, predict=predict, loss=loss, meta_grad=jax.grad(loss, has_aux=True))


def mixture_mean_predictor(learner: MetaLearner) -> MetaLearner:
  """`learner` predicting its mixture's mean `[examples, y_dim]`, for a dataset scored by squared error."""
  return learner._replace(predict=lambda state, x: predictive_moments(learner.predict(state, x))[0])


# The registry: PLATIPUS on the ambiguous sine/line tasks and on MAML's sinusoids.

def _build(c, data):
  from jmeta.experiments import Recipe
  model = data.model('predictor')
  learner = platipus(model.apply, inner_optimizer(c), c.inner_steps, samples=c.samples, kl_weight=c.kl_weight,
                     init_std=c.init_std, init_gamma=c.inner_lr, remat=c.remat)
  if data.metric == 'log_likelihood':
    test_learner = learner
  elif data.metric == 'mse':
    test_learner = mixture_mean_predictor(learner)
  else:
    raise ValueError(f'platipus predicts a mixture of Gaussians: it is scored by log-likelihood or squared error, '
                     f'not {data.metric}')
  return Recipe(lambda key: model.init(key, data.example_x), learner, test_learner)


def _register() -> None:
  from jmeta.experiments import Algorithm, Option, register_algorithm
  # Finn, Xu & Levine (2018) give the tasks (5 shots, half sines, half lines); their network, step sizes and budget
  # could not be read here, so PLATIPUS takes the MAML sinusoid recipe its paper builds on (Finn et al., 2017,
  # section 5.1: 1-40-40-1 ReLU network, one inner SGD step of 0.01, meta-batch 25, Adam 1e-3, 70,000 meta-steps),
  # one draw of theta per task in the bound (Algorithm 1) and the full bound (KL weight 1).
  recipe = dict(SINUSOID_FINN2017, kl_weight=1.0)
  register_algorithm(Algorithm(
      name='platipus', family='gradient-based', title='PLATIPUS', paper='Finn, Xu & Levine, 2018, arXiv:1806.02817',
      options=INNER_OPTIONS + (
          REMAT,
          Option('samples', 'adapted models mixed in the predictive at validation and test time (default 10)',
                 default=10),
          Option('kl_weight', 'weight of the KL term of the bound (default 1: the variational bound)', float,
                 default=1.0),
          Option('init_std', 'initial standard deviation of the prior and of the inference network (default '
                 '0.05)', float, default=0.05),
      ),
      published={'ambiguous': recipe, 'sinusoid': recipe}, build=_build, grad_of_mean=True))


_register()
