"""Neural processes: conditional (Garnelo et al., 2018, arXiv:1807.01613), latent (Garnelo et al., 2018,
arXiv:1807.01622) and attentive (Kim et al., 2019, arXiv:1901.05761).

A neural process adapts without gradient steps: `adapt` encodes the context set (the task's support split) into a
representation, permutation invariant and blind to padded points, and `predict` decodes a Gaussian per target.
Meta-training is maximum likelihood (CNP) or the ELBO (NP, ANP) of the target points given the context.

Randomness. A latent NP's loss draws `z`, and its `adapt` draws the samples of `z` its predictive mixes. Both take
an explicit `key=`; without one, the key is `data_key` of the data, a hash of the real points as a set. So
`loss(params, task)` stays a pure function of its arguments, as `jmeta.meta_step` and `jmeta.evaluator` call it,
freshly random for each freshly drawn task, unchanged by permuting or padding the points.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jmeta import losses
from jmeta.base import MetaLearner, Metrics, Params
from jmeta.checks import check_positive_int
from jmeta.models.neural_process import Encoding, NeuralProcess, init_params
from jmeta.tasks import Split, Task, all_examples, check_task, real


class NPState(NamedTuple):
  """What `adapt` returns.

  Attributes:
    params: the meta-parameters (the network's), to decode targets.
    encoding: the deterministic path's encoding of the context (`jmeta.models.neural_process.Encoding`), or None.
    prior: `(loc, scale)`, each `[latent_dim]`: the latent Gaussian given the context, `q(z | C)`; None for a CNP.
    z: `[samples, latent_dim]` draws from `prior`, which `predict` mixes; None for a CNP.
  """
  params: Params
  encoding: Encoding | None
  prior: tuple[jax.Array, jax.Array] | None
  z: jax.Array | None


def _mix(h: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finaliser, elementwise on uint32."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _set_hash(split: Split) -> jax.Array:
  n = jnp.shape(split.x)[0]
  values = jnp.concatenate([jnp.reshape(split.x, (n, -1)), jnp.reshape(split.y, (n, -1))], axis=1)
  bits = jax.lax.bitcast_convert_type(values.astype(jnp.float32), jnp.uint32)
  salt = _mix(jnp.arange(1, values.shape[1] + 1, dtype=jnp.uint32) * jnp.uint32(0x9E3779B9))
  rows = _mix(jnp.sum(_mix(bits ^ salt), axis=1, dtype=jnp.uint32))
  # Integer sums wrap exactly and commute: the hash of a set, whatever the order, padding excluded.
  return jnp.sum(jnp.where(real(split), rows, jnp.uint32(0)), dtype=jnp.uint32)


def data_key(*splits: Split) -> jax.Array:
  """A PRNG key that is a function of the real points of each split as a set (float32 bits, hashed).

  Permuting a split's points or padding it leaves the key unchanged; any change of a real value changes it.
  """
  key = jax.random.PRNGKey(0)
  for split in splits:
    key = jax.random.fold_in(key, _set_hash(split))
  return key


def kind(model: NeuralProcess) -> str:
  """'cnp', 'np' or 'anp', what `model` is."""
  if not model.latent_dim:
    return 'cnp'
  return 'anp' if model.deterministic_path and model.attention else 'np'


def predictive_moments(predictions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The mean and standard deviation `[targets, y_dim]` of `predict`'s output: the Gaussian's for
  `[targets, 2 * y_dim]`, the equally weighted mixture's for `[targets, samples, 2 * y_dim]`."""
  mean, std = jnp.split(predictions, 2, axis=-1)
  if predictions.ndim == 2:
    return mean, std
  mixture_mean = jnp.mean(mean, axis=1)
  second = jnp.mean(jnp.square(std) + jnp.square(mean), axis=1)
  return mixture_mean, jnp.sqrt(jnp.maximum(second - jnp.square(mixture_mean), 0))


def neural_process(model: NeuralProcess, *, samples: int = 32, targets_include_context: bool = True
                   ) -> MetaLearner:
  """A conditional, latent or attentive neural process as a `MetaLearner`, from its network.

  Args:
    model: a `jmeta.models.NeuralProcess`; its `latent_dim` and `attention` make it a CNP, an NP or an ANP.
    samples: draws of `z` in the predictive of a latent NP (`adapt`'s default).
    targets_include_context: whether a task's query split already holds the context points, as
      `jmeta.datasets.gp_functions` draws training tasks. If False, the loss's targets are the context and the
      query points together, so that, as in the papers, the target set contains the context either way.

  Returns:
    `init(key, model_params=None)`: the network's parameters (initialised from `key` when not given).
    `adapt(params, support, *, key=None, samples=samples) -> NPState`: the context encoded; a latent NP draws
      `samples` values of `z ~ q(z | C)`. `support`: `Split` with `x: [points, x_dim]`, `y: [points, y_dim]` and
      an optional mask `[points]`.
    `predict(state, x) -> predictions` for `x: [targets, x_dim]`: means then standard deviations, `[targets,
      2 * y_dim]` for a CNP; `[targets, samples, 2 * y_dim]` for a latent NP, one Gaussian per draw of `z`, the
      predictive being their equally weighted mixture. `jmeta.losses.gaussian_log_likelihood` scores both
      shapes; `predictive_moments` gives the mean and standard deviation of either.
    `loss(params, task, *, key=None) -> (loss, metrics)`, per target point. CNP: the negative log-likelihood of
      the real targets. NP and ANP: the negative ELBO, `-(mean_i log p(y_i | z, x_i, C) - KL(q(z | T) || q(z |
      C)) / |T|)` with one reparameterised draw `z ~ q(z | T)`, `T` the target set (which contains the context),
      as the attentive NP notebook. Metrics: 'loss', 'log_likelihood' (the first term) and, for latent NPs, 'kl'.
    `meta_grad = jax.grad(loss, has_aux=True)`.

  The test-time log-likelihood of a latent NP scored from `predict` (the registry's metric) is a Monte Carlo
  estimate of each target's marginal `log p(y_i | x_i, C) = log E_{z ~ q(z | C)} N(y_i; mu(z), sigma(z))` with
  `samples` draws: importance sampling with the prior as proposal, biased low by Jensen's inequality by
  O(1 / samples). `joint_log_likelihood` estimates the joint instead.

  Raises:
    ValueError: at trace time, for context or target points whose feature sizes are not the model's `x_dim` and
      `y_dim` (say, targets with 2 input features against a context with 1).
  """
  samples = check_positive_int(samples, 'samples')
  name = kind(model)
  latent = bool(model.latent_dim)

  def check_points(x: jax.Array, y: jax.Array | None, role: str) -> None:
    shapes = [('x', x, model.x_dim)] + ([('y', y, model.y_dim)] if y is not None else [])
    for label, a, dim in shapes:
      if jnp.ndim(a) != 2 or jnp.shape(a)[1] != dim:
        raise ValueError(f'{name}: the {role} points\' {label} has shape {jnp.shape(a)}; expected [points, {dim}]: '
                         f'context and target points must both have the model\'s {label} features (x_dim='
                         f'{model.x_dim}, y_dim={model.y_dim})')

  def apply(params: Params, *args, method: str):
    return model.apply(params, *args, method=method)

  def encode(params: Params, split: Split) -> Encoding | None:
    if not model.deterministic_path:
      return None
    return apply(params, split.x, split.y, real(split), method='encode')

  def latent_of(params: Params, split: Split) -> tuple[jax.Array, jax.Array]:
    return apply(params, split.x, split.y, real(split), method='latent')

  def init(key: jax.Array, model_params: Params | None = None) -> Params:
    return init_params(model, key) if model_params is None else model_params

  def adapt(params: Params, support: Split, *, key: jax.Array | None = None, samples: int = samples) -> NPState:
    check_points(support.x, support.y, 'context')
    encoding = encode(params, support)
    if not latent:
      return NPState(params, encoding, None, None)
    loc, scale = latent_of(params, support)
    key = data_key(support) if key is None else key
    z = loc + scale * jax.random.normal(key, (samples, loc.shape[-1]), loc.dtype)
    return NPState(params, encoding, (loc, scale), z)

  def predict(state: NPState, x: jax.Array) -> jax.Array:
    check_points(x, None, 'target')
    if state.z is None:
      return apply(state.params, state.encoding, None, x, method='decode')
    out = jax.vmap(lambda z: apply(state.params, state.encoding, z, x, method='decode'))(state.z)
    return jnp.swapaxes(out, 0, 1)

  def loss(params: Params, task: Task, *, key: jax.Array | None = None) -> tuple[jax.Array, Metrics]:
    check_points(task.support.x, task.support.y, 'context')
    check_points(task.query.x, task.query.y, 'target')
    check_task(task, f'{name} task')
    targets = task.query if targets_include_context else all_examples(task)
    encoding = encode(params, task.support)
    if not latent:
      predictions = apply(params, encoding, None, targets.x, method='decode')
      log_likelihood = losses.masked(losses.gaussian_log_likelihood)(predictions, targets.y, targets.mask)
      return -log_likelihood, {'loss': -log_likelihood, 'log_likelihood': log_likelihood}
    prior = latent_of(params, task.support)
    posterior = latent_of(params, targets)
    key = data_key(task.support, task.query) if key is None else key
    z = posterior[0] + posterior[1] * jax.random.normal(key, posterior[0].shape, posterior[0].dtype)
    predictions = apply(params, encoding, z, targets.x, method='decode')
    log_likelihood = losses.masked(losses.gaussian_log_likelihood)(predictions, targets.y, targets.mask)
    kl = jnp.sum(losses.normal_kl(*posterior, *prior))
    count = jnp.maximum(jnp.sum(real(targets)), 1).astype(kl.dtype)
    value = -(log_likelihood - kl / count)
    return value, {'loss': value, 'log_likelihood': log_likelihood, 'kl': kl}

  return MetaLearner(init=init, adapt=adapt, predict=predict, loss=loss,
                     meta_grad=jax.grad(loss, has_aux=True))


def joint_log_likelihood(learner: MetaLearner, params: Params, task: Task, key: jax.Array,
                         samples: int = 100) -> jax.Array:
  """`log p(y_T | x_T, C) / |T|`, the joint log-likelihood of the real query points per point.

  Args:
    learner: a `neural_process` learner (whose `predict` gives Gaussians).
    params: its parameters.
    task: the context (support) and the targets (query).
    key: the draws of `z`.
    samples: how many.

  Exact for a CNP (its targets are independent given the context). For a latent NP, an importance-sampled
  estimate (as the IWAE bound, Burda et al., 2015, arXiv:1509.00519) with `samples` draws from the proposal
  `q(z | C and T)`: `logmeanexp_k [sum_i log p(y_i | z_k) + log q(z_k | C) - log q(z_k | C and T)]`, biased low,
  the bias shrinking as the samples grow. Compare it with the GP's `gp_joint_log_likelihood` divided by `|T|`.
  """
  support, query = task.support, task.query
  mask = real(query)
  count = jnp.maximum(jnp.sum(mask), 1)

  def total(predictions: jax.Array) -> jax.Array:
    mean, std = jnp.split(predictions, 2, axis=-1)
    per_point = jnp.sum(losses.normal_log_prob(query.y, mean, std), axis=-1)
    return jnp.sum(jnp.where(mask, per_point, 0))

  state = learner.adapt(params, support)
  if state.z is None:
    return total(learner.predict(state, query.x)) / count
  loc, scale = learner.adapt(params, all_examples(task), samples=1).prior
  z = loc + scale * jax.random.normal(key, (samples, loc.shape[-1]), loc.dtype)
  predictions = learner.predict(state._replace(z=z), query.x)  # [targets, samples, 2 * y_dim]
  log_p = jax.vmap(total, in_axes=1)(predictions)
  log_prior = jnp.sum(losses.normal_log_prob(z, *state.prior), axis=-1)
  log_proposal = jnp.sum(losses.normal_log_prob(z, loc, scale), axis=-1)
  return (jax.nn.logsumexp(log_p + log_prior - log_proposal) - jnp.log(samples)) / count


def cnp(x_dim: int = 1, y_dim: int = 1, **kwargs) -> MetaLearner:
  """A conditional neural process (Garnelo et al., 2018, arXiv:1807.01613) with the CNP notebook's network.

  `kwargs` go to `jmeta.models.NeuralProcess` (hidden, encoder_layers, ...) and to `neural_process`
  (targets_include_context).
  """
  return _make(dict(x_dim=x_dim, y_dim=y_dim, latent_dim=None), kwargs)


def latent_np(x_dim: int = 1, y_dim: int = 1, latent_dim: int = 128, **kwargs) -> MetaLearner:
  """A latent-variable neural process (Garnelo et al., 2018, arXiv:1807.01622); with a deterministic path unless
  `deterministic_path=False`, as the NP of the attentive NP notebook."""
  return _make(dict(x_dim=x_dim, y_dim=y_dim, latent_dim=latent_dim), kwargs)


def anp(x_dim: int = 1, y_dim: int = 1, latent_dim: int = 128, heads: int = 8, self_attention: int = 0,
        **kwargs) -> MetaLearner:
  """An attentive neural process (Kim et al., 2019, arXiv:1901.05761): multi-head cross-attention from the
  targets to the context in the deterministic path, `self_attention` layers of self-attention on the context in
  each path (0 in the notebook), and the latent path."""
  return _make(dict(x_dim=x_dim, y_dim=y_dim, latent_dim=latent_dim, attention=True, heads=heads,
                    self_attention=self_attention), kwargs)


def _make(fields: dict, kwargs: dict) -> MetaLearner:
  learner_kwargs = {k: kwargs.pop(k) for k in ('samples', 'targets_include_context') if k in kwargs}
  return neural_process(NeuralProcess(**fields, **kwargs), **learner_kwargs)


# The registry: each NP on gp (the notebooks' settings) and on sinusoid (beside MAML).

# Datasets whose training query split already holds the context points.
_TARGETS_INCLUDE_CONTEXT = {'gp': True}


def _mean_predictor(learner: MetaLearner) -> MetaLearner:
  """`learner` predicting the predictive mean `[targets, y_dim]`, for a dataset scored by squared error."""
  return learner._replace(predict=lambda state, x: predictive_moments(learner.predict(state, x))[0])


def _recipe(kind_: str):

  def build(c, data):
    from jmeta.experiments import Recipe
    spec = jax.eval_shape(data.train_tasks, jax.random.PRNGKey(0))
    if len(spec.support.x.shape) != 2 or len(spec.support.y.shape) != 2:
      raise ValueError(f'{kind_} needs tasks with x [points, x_dim] and y [points, y_dim]; {c.dataset} has x '
                       f'{spec.support.x.shape} and y {spec.support.y.shape}')
    fields = dict(x_dim=spec.support.x.shape[1], y_dim=spec.support.y.shape[1], hidden=c.hidden)
    if kind_ != 'cnp':
      fields.update(latent_dim=c.latent_dim)
    if kind_ == 'np':
      fields.update(deterministic_path=c.deterministic_path)
    if kind_ == 'anp':
      fields.update(attention=True, heads=c.heads, self_attention=c.self_attention)
    model = NeuralProcess(**fields)
    learner = neural_process(model, samples=c.get('samples', 1),
                             targets_include_context=_TARGETS_INCLUDE_CONTEXT.get(c.dataset, False))
    if data.metric == 'log_likelihood':
      test_learner = learner
    elif data.metric == 'mse':
      test_learner = _mean_predictor(learner)
    else:
      raise ValueError(f'{kind_} predicts Gaussians: it is scored by log-likelihood or squared error, not '
                       f'{data.metric}')
    return Recipe(lambda key: init_params(model, key), learner, test_learner)

  return build


def _check_heads(c) -> None:
  if c.hidden % c.heads:
    raise ValueError(f'anp: hidden ({c.hidden}) must be a multiple of heads ({c.heads})')


def _register() -> None:
  from jmeta.experiments import Algorithm, Option, register_algorithm
  hidden = Option('hidden', 'width of every layer of the encoders and the decoder (default 128, as the notebooks)',
                  default=128)
  latent_dim = Option('latent_dim', 'size of the latent variable z (default 128, as the attentive NP notebook)',
                      default=128)
  samples = Option('samples', 'draws of z in the predictive at validation and test time (default 32)', default=32)
  # Garnelo et al.'s CNP notebook: batches of 64 functions, Adam at 1e-4, 200,000 iterations.
  cnp_gp = dict(meta_batch=64, steps=200_000, outer_lr=1e-4, outer_opt='adam', outer_decay=False)
  # Kim et al.'s attentive NP notebook, for its NP and its ANP: batches of 16 functions, Adam at 1e-4, 100,000
  # iterations, a kernel drawn per function, 3 to 49 context points and at most 49 points in all.
  anp_gp = dict(meta_batch=16, steps=100_000, outer_lr=1e-4, outer_opt='adam', outer_decay=False,
                random_kernel=True, context_max=49, extra_min=0, extra_max=46, max_points=49)
  # No NP paper trains on sinusoids: the notebooks' networks and Adam at 1e-4, with MAML's budget (Finn et al.,
  # 2017: 70,000 meta-steps of 25 tasks), so that the learners of one table saw as many tasks.
  sinusoid = dict(meta_batch=25, steps=70_000, outer_lr=1e-4, outer_opt='adam', outer_decay=False)
  # meta_grad is jax.grad(loss): differentiating the meta-batch's mean loss measured 10% faster per step here (CNP
  # 12.5 -> 11.5 ms, ANP 50 -> 44 ms at the published sizes on gp, 2 loaded cores).
  register_algorithm(Algorithm(
      name='cnp', family='model-based', title='conditional neural processes',
      paper='Garnelo, Rosenbaum, Maddison, Ramalho, Saxton, Shanahan, Teh, Rezende & Eslami, 2018, '
      'arXiv:1807.01613',
      options=(hidden,), published={'gp': cnp_gp, 'sinusoid': sinusoid}, build=_recipe('cnp'), grad_of_mean=True))
  register_algorithm(Algorithm(
      name='np', family='model-based', title='neural processes',
      paper='Garnelo, Schwarz, Rosenbaum, Viola, Rezende, Eslami & Teh, 2018, arXiv:1807.01622',
      options=(hidden, latent_dim, samples,
               Option('deterministic_path', 'a deterministic path beside the latent one, as the attentive NP '
                      'notebook\'s NP (the default); --no-deterministic-path: the latent path alone, as Garnelo et '
                      'al.', bool, default=True, false_flag='--no-deterministic-path')),
      published={'gp': anp_gp, 'sinusoid': sinusoid}, build=_recipe('np'), grad_of_mean=True))
  register_algorithm(Algorithm(
      name='anp', family='model-based', title='attentive neural processes',
      paper='Kim, Mnih, Schwarz, Garnelo, Eslami, Rosenbaum, Vinyals & Teh, 2019, arXiv:1901.05761',
      options=(hidden, latent_dim, samples,
               Option('heads', 'heads of the cross-attention (default 8, as the notebook)', default=8),
               Option('self_attention', 'layers of self-attention on the context in each path (default 0, as the '
                      'notebook)', minimum=0, default=0)),
      published={'gp': anp_gp, 'sinusoid': sinusoid}, build=_recipe('anp'), check=_check_heads,
      grad_of_mean=True))


_register()
