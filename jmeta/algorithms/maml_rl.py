"""MAML for reinforcement learning (Finn, Abbeel & Levine, 2017, arXiv:1703.03400, section 5.3).

The meta-parameters are a Gaussian policy's initialisation (`GaussianParams`: the mean network's weights and a
learned log standard deviation per action dimension). A task is an environment's parameters (a goal); its inner
step is vanilla policy gradient on `trajectories` episodes of the current policy, and its meta-loss is the outer
policy-gradient objective on fresh episodes of the adapted policy.

The inner step differentiates a DiCE surrogate (Foerster et al., 2018, arXiv:1802.05098) with a baseline at every
order (Mao et al., 2019, arXiv:1909.10549): per episode `sum_t (box(c_t) - box(c_{t-1})) A_t`, with
`c_t = sum_{t' <= t} log pi(a_t' | s_t')` and `box(x) = exp(x - stop_gradient(x))`. Its value is a constant, its
gradient the REINFORCE estimate `sum_t grad log pi(a_t | s_t) A_t`, and its Hessian an unbiased estimate of the
expected return's Hessian, score-function terms `grad c_t grad c_t^T` included (the terms lost when a
`log pi * A` surrogate is differentiated twice). The meta-gradient is then `(I + alpha H)^T g'`, where `g'` is the
policy gradient of the adapted policy on its own episodes: the gradient of `J(theta + alpha grad J(theta))`, which
is formulation II of Rothfuss et al. (2019, ProMP, arXiv:1810.06784). The term for the dependence of the pre-update
episodes' distribution on theta (formulation I, E-MAML) is not included. `first_order=True` drops the Hessian.

The outer objective is PPO's clipped surrogate (Schulman et al., 2017, arXiv:1707.06347) of the adapted policy
against the policy that sampled the post-update episodes. Finn et al. used TRPO; TRPO's step (conjugate gradient on
Fisher-vector products of a KL that itself depends on theta through the inner step, then a line search) is not an
optax update of a gradient, while PPO's is: it runs in `jmeta.meta_step` and `jmeta train` unchanged. As each
meta-step samples fresh episodes, the ratio is 1 and the clip does not bind: each step is Adam on the meta-policy
gradient.

Advantages are the discounted returns to go minus a linear-feature baseline fit per task to the episodes it scores
(rllab's `LinearFeatureBaseline`, as Finn et al. used), normalised over the batch (rllab's `center_adv`).

Task kind: a task rides in a `jmeta.Task` as `jmeta.algorithms.rl2.trial_split` rows (a rollout key and the goal):
`adapt(params, support, steps=S)` takes S inner steps, each on fresh episodes keyed by the support row, the first
with `inner_lr` and later ones with `inner_lr * later_lr_scale` (Finn et al. halved it after the first step at
test time); `predict(adapted, x)` returns the episodes' returns `[rows, trajectories]`; `loss(params, task)` adapts
on the support row's episodes and scores on the query row's.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jmeta.base import ApplyFn, MetaLearner, Params
from jmeta.checks import check_positive_int, check_positive_number
from jmeta.envs.base import Environment
from jmeta.envs.rollout import rollout
from jmeta.tasks import Split, Task

KEY_WIDTH = 4
"""Entries of a task row holding its rollout key (`jmeta.algorithms.rl2.trial_split`)."""


class GaussianParams(NamedTuple):
  """A diagonal Gaussian policy's parameters: `mean`, the mean network's (any pytree), and `log_std [actions]`."""
  mean: Params
  log_std: jax.Array


class Episodes(NamedTuple):
  """A batch of episodes of one task, each leaf `[trajectories, horizon, ...]`.

  Attributes:
    obs: `[N, T, obs_dim]`; action: `[N, T, action_dim]`; reward: `[N, T]`.
    valid: `[N, T]` bool, the steps up to and including the episode's first `done`.
    log_prob: `[N, T]`, the log-probability of each action under the policy that acted.
  """
  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  valid: jax.Array
  log_prob: jax.Array


def gaussian_log_prob(params: GaussianParams, apply_fn: ApplyFn, obs: jax.Array, action: jax.Array) -> jax.Array:
  """`log N(action; apply_fn(params.mean, obs), exp(params.log_std)^2)` summed over action dimensions.

  obs: `[..., obs_dim]`, action `[..., action_dim]`; returns `[...]`."""
  batch = obs.shape[:-1]
  mean = apply_fn(params.mean, obs.reshape(-1, obs.shape[-1])).reshape(*batch, -1)
  z = (action - mean) * jnp.exp(-params.log_std)
  return jnp.sum(-0.5 * jnp.square(z) - params.log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def gaussian_policy(apply_fn: ApplyFn) -> Callable:
  """A `jmeta.envs.Policy` sampling `mean + std * noise`; `aux` is the sample's log-probability."""

  def policy(params: GaussianParams, carry, obs, prev_action, prev_reward, done, key):
    mean = apply_fn(params.mean, obs[None])[0]
    action = mean + jnp.exp(params.log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    return carry, action, gaussian_log_prob(params, apply_fn, obs[None], action[None])[0]

  return policy


def valid_steps(done: jax.Array) -> jax.Array:
  """`[..., T]` bool: the steps of the first episode, up to and including its first `done`."""
  done = done.astype(jnp.int32)
  return (jnp.cumsum(done, axis=-1) - done) == 0


def sample_episodes(env: Environment, apply_fn: ApplyFn, params: GaussianParams, env_params: Any, key: jax.Array,
                    trajectories: int, horizon: int) -> Episodes:
  """`trajectories` episodes of at most `horizon` steps of the policy in task `env_params` (no gradient flows).

  One `lax.scan` over time steps all episodes at once. Each episode's keys are drawn before the scan (its reset's,
  its `horizon` steps', and its action noise `[horizon, action_dim]` in one draw), so no PRNG runs inside the loop:
  that compiles several times faster than `jmeta.rollout` with `gaussian_policy`, and an episode is only ever
  followed to its first `done` (steps after it are not `valid`), so `rollout`'s resets are not needed.
  """
  params = jax.lax.stop_gradient(params)
  action_dim = env.action.shape[0]
  keys = jax.vmap(lambda k: jax.random.split(k, 3))(jax.random.split(key, trajectories))
  state, obs = jax.vmap(lambda k: env.reset(k, env_params))(keys[:, 0])
  noise = jax.vmap(lambda k: jax.random.normal(k, (horizon, action_dim)))(keys[:, 1])
  step_keys = jax.vmap(lambda k: jax.random.split(k, horizon))(keys[:, 2])
  std = jnp.exp(params.log_std)

  def one_step(carry, inputs):
    state, obs = carry
    eps, step_key = inputs
    action = apply_fn(params.mean, obs) + std * eps
    state, next_obs, reward, done = jax.vmap(lambda k, s, a: env.step(k, s, a, env_params))(step_key, state, action)
    return (state, next_obs), (obs, action, jnp.asarray(reward, jnp.float32), jnp.asarray(done, jnp.bool_))

  _, (obs, action, reward, done) = jax.lax.scan(one_step, (state, obs),
                                                (jnp.swapaxes(noise, 0, 1), jnp.swapaxes(step_keys, 0, 1)))
  obs, action, reward, done = (jnp.swapaxes(v, 0, 1) for v in (obs, action, reward, done))
  valid = valid_steps(done)
  log_prob = gaussian_log_prob(params, apply_fn, obs, action)
  return Episodes(obs, action, jnp.where(valid, reward, 0.0), valid, log_prob)


def discounted_returns(rewards: jax.Array, discount: float) -> jax.Array:
  """Returns to go `G_t = sum_{t' >= t} discount^(t' - t) r_t'` of one episode, `[T] -> [T]` (a reverse scan)."""

  def back(acc, r):
    acc = r + discount * acc
    return acc, acc

  return jax.lax.scan(back, jnp.zeros((), rewards.dtype), rewards, reverse=True)[1]


def linear_features(obs: jax.Array, horizon_scale: float = 100.0) -> jax.Array:
  """rllab's `LinearFeatureBaseline` features of one episode, `[T, d] -> [T, 2d + 4]`: the clipped observation,
  its square, `t / 100` to the powers 1, 2, 3, and 1."""
  o = jnp.clip(obs, -10.0, 10.0)
  t = (jnp.arange(obs.shape[0], dtype=obs.dtype) / horizon_scale)[:, None]
  return jnp.concatenate([o, o * o, t, t * t, t ** 3, jnp.ones_like(t)], axis=-1)


def linear_baseline(obs: jax.Array, returns: jax.Array, valid: jax.Array, reg: float = 1e-5) -> jax.Array:
  """The least-squares fit (ridge `reg`, as rllab) of `returns` on `linear_features`, over the valid steps of a batch
  of episodes, evaluated at every step. obs `[N, T, d]`, returns and valid `[N, T]`; returns `[N, T]`.

  The features are scaled to unit root-mean-square before the solve (an observation far from the origin makes its
  square's column 10^4 times the constant's, and the float32 normal equations singular); a fit that is still not
  finite gives the baseline 0, as rllab's retries with a larger ridge would give a finite one."""
  features = jax.vmap(linear_features)(obs)
  weights = valid[..., None].astype(features.dtype)
  f = (features * weights).reshape(-1, features.shape[-1])
  scale = jnp.sqrt(jnp.sum(f * f, axis=0) / jnp.maximum(jnp.sum(weights), 1.0)) + 1e-6
  f = f / scale
  gram = f.T @ f + reg * jnp.eye(f.shape[1], dtype=f.dtype)
  coef = jnp.linalg.solve(gram, f.T @ (returns * valid).reshape(-1))
  fitted = (features / scale) @ coef
  return jnp.where(jnp.all(jnp.isfinite(coef)), fitted, 0.0)


def advantages(episodes: Episodes, discount: float, normalize: bool = True) -> jax.Array:
  """Returns to go minus the linear baseline, normalised to mean 0 and std 1 over the valid steps; 0 elsewhere.
  `[N, T]`, with no gradient."""
  returns = jax.vmap(lambda r: discounted_returns(r, discount))(episodes.reward)
  adv = returns - linear_baseline(episodes.obs, returns, episodes.valid)
  valid = episodes.valid.astype(adv.dtype)
  if normalize:
    count = jnp.maximum(jnp.sum(valid), 1.0)
    mean = jnp.sum(adv * valid) / count
    std = jnp.sqrt(jnp.sum(jnp.square(adv - mean) * valid) / count)
    adv = (adv - mean) / (std + 1e-8)
  return jax.lax.stop_gradient(adv * valid)


def magic_box(x: jax.Array) -> jax.Array:
  """DiCE's `box(x) = exp(x - stop_gradient(x))`: 1 in value, `box(x) * grad x` in gradient (Foerster et al.,
  2018, arXiv:1802.05098)."""
  return jnp.exp(x - jax.lax.stop_gradient(x))


def dice_surrogate(log_probs: jax.Array, advantages: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """DiCE's surrogate of one episode with a baseline at every order: `sum_t (box(c_t) - box(c_{t-1})) A_t`.

  `c_t = sum_{t' <= t} log_probs[t']` (`c_{-1} = 0`); `A_t` is held fixed. Its gradient is REINFORCE's
  `sum_t grad log pi_t A_t`, and every higher derivative is the expected return's, in expectation over episodes:
  with `A_t = G_t - b_t` this is `sum_t box(c_t) r_t` rewritten by parts, plus Mao et al.'s (2019,
  arXiv:1909.10549) baseline term `sum_t (1 - box(log pi_t)) box(c_{t-1}) b_t`, zero in expectation at every order.

  log_probs, advantages, valid: `[T]` (valid: which steps count; default all). Returns a scalar (0 in value).
  """
  if valid is not None:
    log_probs = jnp.where(valid, log_probs, 0.0)
    advantages = jnp.where(valid, advantages, 0.0)
  cum = jnp.cumsum(log_probs)
  boxed = magic_box(cum)
  before = jnp.concatenate([jnp.ones((1,), boxed.dtype), boxed[:-1]])
  return jnp.sum((boxed - before) * jax.lax.stop_gradient(advantages))


def clipped_objective(log_probs: jax.Array, old_log_probs: jax.Array, advantages: jax.Array, valid: jax.Array,
                      clip: float) -> jax.Array:
  """PPO's clipped surrogate to maximise, averaged over valid steps: `mean(min(r A, clip(r, 1 +- clip) A))`,
  `r = exp(log_probs - old_log_probs)` (Schulman et al., 2017, arXiv:1707.06347). All `[N, T]`."""
  ratio = jnp.exp(log_probs - jax.lax.stop_gradient(old_log_probs))
  adv = jax.lax.stop_gradient(advantages)
  per_step = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * adv)
  valid = valid.astype(per_step.dtype)
  return jnp.sum(per_step * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def inner_objective(params: GaussianParams, apply_fn: ApplyFn, episodes: Episodes, adv: jax.Array) -> jax.Array:
  """The inner step's surrogate: `dice_surrogate` of each episode, summed, over the number of valid steps (so its
  gradient is the mean of `grad log pi A` over steps, as Finn et al.'s code and rllab's VPG)."""
  log_probs = gaussian_log_prob(params, apply_fn, episodes.obs, episodes.action)
  total = jnp.sum(jax.vmap(dice_surrogate)(log_probs, adv, episodes.valid))
  return total / jnp.maximum(jnp.sum(episodes.valid), 1).astype(total.dtype)


def gradient_step(objective: Callable[[Params], jax.Array], params: Params, lr: float | jax.Array,
                  first_order: bool = False) -> Params:
  """One step of gradient ascent, `params + lr * grad objective(params)`, differentiable through the gradient (the
  exact second-order meta-gradient) unless `first_order`."""
  grads = jax.grad(objective)(params)
  if first_order:
    grads = jax.lax.stop_gradient(grads)
  return jax.tree.map(lambda p, g: p + lr * g, params, grads)


def mean_return(episodes: Episodes) -> jax.Array:
  """The undiscounted return of each episode averaged over the batch: a scalar."""
  return jnp.mean(jnp.sum(episodes.reward, axis=-1))


def maml_rl(apply_fn: ApplyFn, env: Environment, *, action_dim: int | None = None, trajectories: int = 20,
            horizon: int = 100, inner_lr: float = 0.1, steps: int = 1, later_lr_scale: float = 0.5,
            discount: float = 0.99, clip: float = 0.2, init_std: float = 1.0,
            first_order: bool = False) -> MetaLearner:
  """MAML-RL (Finn et al., 2017, arXiv:1703.03400, section 5.3) with a diagonal Gaussian policy.

  Args:
    apply_fn: `apply_fn(mean_params, obs [B, obs_dim]) -> action means [B, action_dim]`, e.g. an MLP 100-100.
    env: a `jmeta.envs.Environment` with float actions `[action_dim]`, e.g. `jmeta.envs.navigation_2d()`.
    trajectories: episodes per inner step and per meta-loss (20 in the paper's 2D navigation).
    horizon: steps per episode (an episode ends earlier on `done`).
    inner_lr: the inner policy-gradient step (0.1); later_lr_scale: the step of the second and later inner steps
      is `inner_lr * later_lr_scale` (Finn et al. halve it at test time).
    steps: inner steps while meta-training (>= 0; 0 trains one policy on all tasks, the pretrained baseline).
    discount: of the returns to go; clip: PPO's clip of the outer ratio.
    init_std: the initial standard deviation of the actions (`init` sets `log_std` to its log).
    first_order: drop the inner step's Hessian from the meta-gradient.

  Returns:
    A `MetaLearner` over `GaussianParams`: `init(key, mean_params)`, `adapt(params, support, steps=S)`,
    `predict(adapted, x) -> returns [rows, trajectories]`, `loss(params, task)` (minus PPO's objective; metrics
    `loss`, `pre_return`, `post_return`, `std`) and `meta_grad = jax.grad(loss)`.
  """
  if not jnp.issubdtype(env.action.dtype, jnp.floating) or len(env.action.shape) != 1:
    raise ValueError(f'maml_rl: the Gaussian policy takes float vector actions; the environment takes '
                     f'{env.action.dtype} {list(env.action.shape)}')
  if action_dim is not None and action_dim != env.action.shape[0]:
    raise ValueError(f'maml_rl: action_dim {action_dim} does not match the environment\'s {env.action.shape[0]}')
  action_dim = env.action.shape[0]
  trajectories = check_positive_int(trajectories, 'trajectories')
  horizon = check_positive_int(horizon, 'horizon')
  inner_lr = check_positive_number(inner_lr, 'inner_lr')
  train_steps = check_positive_int(steps, 'steps (inner steps while meta-training)', minimum=0)
  later_lr_scale = check_positive_number(later_lr_scale, 'later_lr_scale')
  if isinstance(discount, bool) or not isinstance(discount, (int, float)) or not 0 < discount <= 1:
    raise ValueError(f'discount must be a number in (0, 1]; got {discount!r}')
  clip = check_positive_number(clip, 'clip')
  init_std = check_positive_number(init_std, 'init_std')
  example, unravel = ravel_pytree(env.sample_params(jax.random.PRNGKey(0)))
  width = KEY_WIDTH + example.shape[0]

  def rows(x: jax.Array):
    if x.ndim != 2 or x.shape[1] != width:
      raise ValueError(f'maml_rl: task rows must be [rows, {width}] from rl2.trial_split (key halves, then the task '
                       f'parameters); got {list(x.shape)}')
    from jmeta.algorithms.rl2 import _from_halves
    return jax.vmap(_from_halves)(x[:, :KEY_WIDTH]), jax.vmap(unravel)(x[:, KEY_WIDTH:])

  def episodes_of(params, env_params, key):
    return sample_episodes(env, apply_fn, params, env_params, key, trajectories, horizon)

  def inner_loop(params: GaussianParams, env_params: Any, key: jax.Array, num_steps: int):
    """`(adapted, returns [num_steps + 1])`: the mean return of the episodes each stage sampled (the last stage's
    episodes are sampled and scored but not stepped on)."""

    def one(p, i):
      eps = episodes_of(p, env_params, jax.random.fold_in(key, i))
      lr = jnp.where(i == 0, inner_lr, inner_lr * later_lr_scale)
      adv = advantages(eps, discount)
      p = gradient_step(lambda q: inner_objective(q, apply_fn, eps, adv), p, lr, first_order)
      return p, mean_return(eps)

    adapted, returns = jax.lax.scan(one, params, jnp.arange(num_steps))
    return adapted, returns

  def adapt(params: GaussianParams, support: Split, *, steps: int = train_steps) -> GaussianParams:
    """The policy after `steps` inner steps on episodes keyed by the first row of `support.x`."""
    steps = check_positive_int(steps, 'steps', minimum=0)
    keys, env_params = rows(support.x)
    return inner_loop(params, jax.tree.map(lambda v: v[0], env_params), keys[0], steps)[0]

  def predict(adapted: GaussianParams, x: jax.Array) -> jax.Array:
    """The returns `[rows, trajectories]` of fresh episodes of `adapted` keyed by each row of `x`."""
    keys, env_params = rows(x)
    eps = jax.vmap(lambda e, k: episodes_of(adapted, e, k))(env_params, keys)
    return jnp.sum(eps.reward, axis=-1)

  def loss(params: GaussianParams, task: Task):
    keys, env_params = rows(task.support.x)
    goal = jax.tree.map(lambda v: v[0], env_params)
    adapted, pre_returns = inner_loop(params, goal, keys[0], train_steps)
    post_keys, _ = rows(task.query.x)
    post = episodes_of(adapted, goal, post_keys[0])
    adv = advantages(post, discount)
    log_probs = gaussian_log_prob(adapted, apply_fn, post.obs, post.action)
    objective = clipped_objective(log_probs, post.log_prob, adv, post.valid, clip)
    pre = pre_returns[0] if train_steps else mean_return(post)
    metrics = {'loss': -objective, 'pre_return': pre, 'post_return': mean_return(post),
               'std': jnp.mean(jnp.exp(params.log_std))}
    return -objective, metrics

  def init(key: jax.Array, mean_params: Params) -> GaussianParams:
    del key
    return GaussianParams(mean_params, jnp.full((action_dim,), jnp.log(init_std), jnp.float32))

  return MetaLearner(init=init, adapt=adapt, predict=predict, loss=loss, meta_grad=jax.grad(loss, has_aux=True))


def adaptation_returns(learner_args: dict, apply_fn: ApplyFn, env: Environment, params: GaussianParams,
                       env_params: Any, key: jax.Array, steps: int) -> jax.Array:
  """The mean return `[steps + 1]` of the episodes sampled before each of `steps` inner steps and after the last
  (Finn et al.'s protocol: each stage's episodes are scored, then stepped on), for one task.

  `learner_args`: `maml_rl`'s keyword arguments (trajectories, horizon, inner_lr, later_lr_scale, discount)."""
  args = dict(trajectories=20, horizon=100, inner_lr=0.1, later_lr_scale=0.5, discount=0.99)
  unknown = set(learner_args) - set(args)
  if unknown:
    raise ValueError(f'adaptation_returns: unknown arguments {sorted(unknown)}; expected some of {sorted(args)}')
  args.update(learner_args)
  steps = check_positive_int(steps, 'steps', minimum=0)

  def one(p, i):
    eps = sample_episodes(env, apply_fn, p, env_params, jax.random.fold_in(key, i), args['trajectories'],
                          args['horizon'])
    lr = jnp.where(i == 0, args['inner_lr'], args['inner_lr'] * args['later_lr_scale'])
    adv = advantages(eps, args['discount'])
    return gradient_step(lambda q: inner_objective(q, apply_fn, eps, adv), p, lr, True), mean_return(eps)

  _, returns = jax.lax.scan(one, params, jnp.arange(steps + 1))
  return returns


def navigation_oracle_return(goal: jax.Array, horizon: int = 100, max_action: float = 0.1,
                             tolerance: float = 0.01) -> jax.Array:
  """The return of the deterministic policy that knows the goal and steps `clip(goal - position)` toward it, in
  `jmeta.envs.navigation_2d`'s dynamics (reward minus the distance after the step; done within `tolerance`)."""
  env = _navigation(horizon, max_action, tolerance)
  walk = lambda g, carry, obs, *_: (carry, g - obs, ())
  from jmeta.envs import NavigationParams
  traj = rollout(env, walk, goal, NavigationParams(goal), jax.random.PRNGKey(0), horizon)
  return jnp.sum(jnp.where(valid_steps(traj.done), traj.reward, 0.0))


def _navigation(horizon: int, max_action: float = 0.1, tolerance: float = 0.01) -> Environment:
  from jmeta.envs import navigation_2d
  return navigation_2d(horizon, max_action=max_action, tolerance=tolerance)


def _register() -> None:
  from jmeta import models
  from jmeta.algorithms.rl2 import trial_tasks
  from jmeta.experiments import Algorithm, Data, Dataset, Option, Recipe, register_algorithm, register_dataset

  def load(c, data_dir=None):
    del data_dir
    sample = trial_tasks(_navigation(c.horizon))

    def model(role):
      raise ValueError(f'the navigation dataset has no {role!r} model; its learners act in the environment '
                       '(maml-rl)')

    def no_loss(predictions, targets):
      raise ValueError('the navigation dataset has no predictor loss; maml-rl computes its own from the rewards')

    example = sample(jax.random.PRNGKey(0)).support.x
    return Data(sample, sample, sample, model, jnp.concatenate([example, example]), no_loss, None,
                lambda returns, goals: jnp.mean(returns), 'return')

  register_dataset(Dataset(
      name='navigation', kind='environment',
      summary='2-D point navigation to a goal U[-0.5, 0.5]^2 per task, velocity actions clipped to 0.1, reward '
      'minus the distance to the goal (Finn et al., 2017, section 5.3); the metric is the return per episode, '
      'higher is better',
      options=(Option('horizon', 'steps per episode (default 100)'),),
      defaults=dict(horizon=100), load=load))

  def build(c, data):
    env = _navigation(c.horizon)
    module = models.MLP(hidden=(c.hidden, c.hidden), out=env.action.shape[0])
    learner = maml_rl(lambda p, x: module.apply({'params': p}, x), env, trajectories=c.trajectories,
                      horizon=c.horizon, inner_lr=c.inner_lr, steps=c.inner_steps, later_lr_scale=c.later_lr_scale,
                      discount=c.discount, clip=c.clip, first_order=c.first_order)
    init_model = lambda key: module.init(key, jnp.zeros((1,) + env.observation.shape))['params']
    return Recipe(init_model, learner, learner)

  def unit(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
      raise ValueError(f'{name} must be a number in (0, 1]; got {value!r}')
    return float(value)

  # Finn et al. (2017), section 5.3 and appendix A.2: a policy MLP 100-100 with ReLU, one inner step of vanilla
  # policy gradient with alpha = 0.1 on 20 trajectories of horizon 100 (halved to 0.05 after the first step at
  # test time), a linear-feature baseline, meta-batches of 20 tasks, up to 500 meta-iterations (TRPO there; PPO
  # with Adam here, see the module docstring). Discount 0.99 is their code's (rllab's default); PPO's clip 0.2 is
  # Schulman et al.'s. Adam's 1e-3 is ours (benchmarks/maml_rl.py): 2e-3 learned no better by 410 iterations and
  # diverged by 1,100; 3e-3 and 1e-2 made the pre-update policy unstable. Their figure scores 40 held-out goals.
  published = {'navigation': dict(hidden=100, trajectories=20, inner_steps=1, eval_inner_steps=1, inner_lr=0.1,
                                  later_lr_scale=0.5, meta_batch=20, steps=500, outer_opt='adam', outer_lr=1e-3,
                                  log_every=10, valid_episodes=40, eval_episodes=40)}
  register_algorithm(Algorithm(
      name='maml-rl', family='gradient-based', title='MAML-RL',
      paper='Finn, Abbeel & Levine, 2017, arXiv:1703.03400, section 5.3',
      options=(
          Option('hidden', 'units of each of the policy\'s two hidden layers (default 100)', default=100),
          Option('trajectories', 'episodes per inner step and per meta-loss (default 20)', default=20),
          Option('inner_steps', 'inner policy-gradient steps while training; 0 trains one policy on all tasks '
                 '(the pretrained baseline) (default 1)', minimum=0, default=1),
          Option('eval_inner_steps', 'inner steps at validation and test time (default 1)', minimum=0, default=1),
          Option('inner_lr', 'the first inner step size (default 0.1)', float, default=0.1),
          Option('later_lr_scale', 'later inner steps take inner_lr times this (default 0.5)', float, default=0.5),
          Option('discount', 'discount of the returns to go, in (0, 1] (default 0.99)', float, default=0.99,
                 validate=unit),
          Option('clip', "PPO's clip of the outer probability ratio (default 0.2)", float, default=0.2),
          Option('first_order', 'drop the inner step\'s Hessian from the meta-gradient', bool, default=False),
      ),
      published=published, build=build, grad_of_mean=True))


_register()
