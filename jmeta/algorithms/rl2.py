"""RL^2 (Duan et al., 2016, arXiv:1611.02779): a recurrent policy meta-trained across tasks learns inside a trial.

The policy is a GRU that reads, at each step, the observation, the previous action (one-hot), the previous reward
and the previous `done` flag, and keeps its hidden state across the episodes of a trial (several episodes of one
task, one `jmeta.rollout`). A trial is one task's `loss`: the policy acts for `steps` steps, and an actor-critic
loss on what it saw (generalised advantage estimation over the whole trial, whose end alone is terminal, and PPO's
clipped surrogate, Schulman et al., 2017, arXiv:1707.06347) is differentiated through the recurrent unroll. Duan
et al. trained with TRPO; here the outer optimizer (Adam) takes one step per meta-batch of trials, so the
surrogate's ratio is 1 and its clip never binds: the step is an advantage actor-critic step with GAE.

Task kind: an environment trial rides in a `jmeta.Task` so that `jmeta.meta_step`, `fit`, the evaluator and the
command line take it unchanged. `trial_split(key, env_params)` writes one trial's rollout key (as four exact 16-bit
halves) and the task's parameters (flattened) into a row of `x`, and the parameters alone into `y` (what a score
may compare against, e.g. the best arm's probability). `adapt` is the identity, as RL^2 adapts in its hidden state;
`predict(params, x)` rolls out each row's trial and returns its rewards `[trials, steps]`; `loss(params, task)`
trains on the support trials. The registry's `bandit` dataset (defined here) draws `jmeta.envs.bernoulli_bandit`
tasks, and `jmeta train --algo rl2 --dataset bandit` trains on them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jmeta.base import MetaLearner, Params
from jmeta.checks import check_positive_int, check_positive_number
from jmeta.envs.base import Environment
from jmeta.envs.rollout import Trajectory, rollout
from jmeta.tasks import Split, Task

KEY_WIDTH = 4
"""Entries of a trial row that hold its rollout key: two uint32 words as four 16-bit halves."""


class GRUPolicy(nn.Module):
  """RL^2's recurrent actor-critic for `actions` discrete actions: a GRU over `[obs, one_hot(prev_action),
  prev_reward, done]`, then a linear policy head (logits) and a linear value head.

  Attributes:
    actions: number of discrete actions.
    hidden: GRU units (256 in Duan et al.'s bandit experiments, as we recall them).
  """
  actions: int
  hidden: int = 256

  def initial_carry(self) -> jax.Array:
    """The hidden state at a trial's start: zeros `[hidden]`."""
    return jnp.zeros((self.hidden,), jnp.float32)

  @nn.compact
  def __call__(self, carry: jax.Array, obs: jax.Array, prev_action: jax.Array, prev_reward: jax.Array,
               done: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`(carry [hidden], logits [actions], value [])` for one step; `prev_action` -1 (no action yet) is zeros."""
    inputs = jnp.concatenate([jnp.ravel(obs).astype(jnp.float32), jax.nn.one_hot(prev_action, self.actions),
                              jnp.reshape(prev_reward, (1,)).astype(jnp.float32),
                              jnp.reshape(done, (1,)).astype(jnp.float32)])
    carry, h = nn.GRUCell(self.hidden, name='gru')(carry, inputs)
    return carry, nn.Dense(self.actions, name='policy')(h), nn.Dense(1, name='value')(h)[0]


def recurrent_policy(module: GRUPolicy) -> Callable:
  """`module` as a `jmeta.envs.Policy`: samples an action from its logits; `aux` is `(logits, value)`."""

  def policy(params, carry, obs, prev_action, prev_reward, done, key):
    carry, logits, value = module.apply(params, carry, obs, prev_action, prev_reward, done)
    return carry, jax.random.categorical(key, logits).astype(jnp.int32), (logits, value)

  return policy


def gae(rewards: jax.Array, values: jax.Array, discount: float, lam: float) -> jax.Array:
  """Generalised advantage estimates (Schulman et al., 2016, arXiv:1506.02438) of one trial, terminal at its end.

  `delta_t = r_t + discount * V_{t+1} - V_t` with `V_T = 0`, `A_t = delta_t + discount * lam * A_{t+1}`, in a reverse
  `lax.scan`. rewards, values: `[steps]`. Returns `[steps]`.
  """
  following = jnp.concatenate([values[1:], jnp.zeros((1,), values.dtype)])
  deltas = rewards + discount * following - values

  def back(acc, delta):
    acc = delta + discount * lam * acc
    return acc, acc

  _, advantages = jax.lax.scan(back, jnp.zeros((), deltas.dtype), deltas, reverse=True)
  return advantages


def clipped_surrogate(log_ratio: jax.Array, advantages: jax.Array, clip: float) -> jax.Array:
  """PPO's clipped surrogate objective to maximise, `mean(min(r A, clip(r, 1 - clip, 1 + clip) A))` with
  `r = exp(log_ratio)` (Schulman et al., 2017, arXiv:1707.06347). log_ratio, advantages: `[steps]`."""
  ratio = jnp.exp(log_ratio)
  return jnp.mean(jnp.minimum(ratio * advantages, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * advantages))


def _to_halves(key: jax.Array) -> jax.Array:
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  if key.shape != (2,) or key.dtype != jnp.uint32:
    raise ValueError(f'trial_split: key must be a raw uint32 [2] key (jax.random.PRNGKey); got {key.dtype} '
                     f'{list(key.shape)}')
  return jnp.stack([key >> 16, key & 0xFFFF], axis=-1).reshape(4).astype(jnp.float32)


def _from_halves(halves: jax.Array) -> jax.Array:
  words = jnp.round(halves).astype(jnp.uint32).reshape(2, 2)
  return (words[:, 0] << 16) | words[:, 1]


def trial_split(keys: jax.Array, env_params: Any) -> Split:
  """A `Split` of trials of one task: `x [trials, 4 + P]` (each trial's rollout key as 16-bit halves, then the
  task's parameters raveled to `P` floats), `y [trials, P]` (the parameters). keys: `[trials, 2]` uint32."""
  flat, _ = ravel_pytree(env_params)
  flat = flat.astype(jnp.float32)
  x = jax.vmap(lambda k: jnp.concatenate([_to_halves(k), flat]))(keys)
  return Split(x, jnp.broadcast_to(flat, (keys.shape[0], flat.shape[0])))


def trial_tasks(env: Environment, support_trials: int = 1, query_trials: int = 1) -> Callable[[jax.Array], Task]:
  """`key -> Task`: one task of `env` with `support_trials` trials to train on and `query_trials` to score, each
  with its own rollout key (`trial_split`)."""
  support_trials = check_positive_int(support_trials, 'support_trials')
  query_trials = check_positive_int(query_trials, 'query_trials')

  def sample(key: jax.Array) -> Task:
    task_key, trials_key = jax.random.split(key)
    env_params = env.sample_params(task_key)
    keys = jax.random.split(trials_key, support_trials + query_trials)
    return Task(trial_split(keys[:support_trials], env_params), trial_split(keys[support_trials:], env_params))

  return sample


def rl2(module: GRUPolicy, env: Environment, steps: int, *, discount: float = 0.99, gae_lambda: float = 0.3,
        clip: float = 0.2, value_coef: float = 0.5, entropy_coef: float = 0.01) -> MetaLearner:
  """RL^2 with `module` (a `GRUPolicy`, or any Flax module with `initial_carry()` and `__call__(carry, obs,
  prev_action, prev_reward, done) -> (carry, logits, value)`) on trials of `steps` steps of `env`'s tasks.

  `loss(params, task)`: each support trial of `task` (`trial_tasks`) rolled out, then `-surrogate + value_coef *
  value_loss - entropy_coef * entropy`, averaged over trials; metrics `loss`, `reward` (total per trial),
  `value_loss`, `entropy` (nats per step). The surrogate is `clipped_surrogate` against the policy that acted (its
  log-probabilities held fixed), with `gae(rewards, values, discount, gae_lambda)` advantages; the value head
  regresses on `advantages + values`. `predict(params, x)`: the rewards `[trials, steps]` of the trials in `x`.
  """
  steps = check_positive_int(steps, 'steps')
  discount = _unit(discount, 'discount')
  gae_lambda = _unit(gae_lambda, 'gae_lambda', allow_zero=True)
  clip = check_positive_number(clip, 'clip')
  value_coef = check_positive_number(value_coef, 'value_coef')
  entropy_coef = _non_negative(entropy_coef, 'entropy_coef')
  if not jnp.issubdtype(env.action.dtype, jnp.integer) or env.action.shape != ():
    raise ValueError(f'rl2: the GRU policy takes discrete actions (int scalar); the environment takes '
                     f'{env.action.dtype} {list(env.action.shape)}')
  policy = recurrent_policy(module)
  example, unravel = ravel_pytree(env.sample_params(jax.random.PRNGKey(0)))
  width = KEY_WIDTH + example.shape[0]

  def trials(params: Params, x: jax.Array) -> Trajectory:
    if x.ndim != 2 or x.shape[1] != width:
      raise ValueError(f'rl2: trials must be rows [trials, {width}] from trial_split (key halves, then the task '
                       f'parameters); got {list(x.shape)}')

    def one(row):
      env_params = unravel(row[KEY_WIDTH:])
      return rollout(env, policy, params, env_params, _from_halves(row[:KEY_WIDTH]), steps,
                     carry=module.initial_carry())

    return jax.vmap(one)(x)

  def trial_loss(trajectory: Trajectory):
    logits, values = trajectory.aux
    log_probs = jax.nn.log_softmax(logits)
    taken = jnp.take_along_axis(log_probs, trajectory.action[:, None], axis=1)[:, 0]
    advantages = gae(trajectory.reward, jax.lax.stop_gradient(values), discount, gae_lambda)
    targets = advantages + jax.lax.stop_gradient(values)
    surrogate = clipped_surrogate(taken - jax.lax.stop_gradient(taken), advantages, clip)
    value_loss = 0.5 * jnp.mean(jnp.square(values - targets))
    entropy = -jnp.mean(jnp.sum(jnp.exp(log_probs) * log_probs, axis=1))
    loss = -surrogate + value_coef * value_loss - entropy_coef * entropy
    return loss, {'loss': loss, 'reward': jnp.sum(trajectory.reward), 'value_loss': value_loss, 'entropy': entropy}

  def loss(params: Params, task: Task):
    values, metrics = jax.vmap(trial_loss)(trials(params, task.support.x))
    return jnp.mean(values), jax.tree.map(jnp.mean, metrics)

  def predict(params: Params, x: jax.Array) -> jax.Array:
    return trials(params, x).reward

  def meta_grad(params: Params, task: Task):
    return jax.grad(loss, has_aux=True)(params, task)

  return MetaLearner(init=lambda key, model_params: model_params, adapt=lambda params, support, **_: params,
                     predict=predict, loss=loss, meta_grad=meta_grad)


def init_params(module: GRUPolicy, key: jax.Array, env: Environment) -> Params:
  """The module's parameters for `env`'s observations. One compiled program per module setting and observation
  shape, reused by every call."""
  return _init(module, key, env.observation)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init(module: GRUPolicy, key: jax.Array, observation: jax.ShapeDtypeStruct) -> Params:
  obs = jnp.zeros(observation.shape, observation.dtype)
  return module.init(key, module.initial_carry(), obs, jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.ones((), bool))


def _unit(value, name: str, allow_zero: bool = False) -> float:
  low_ok = (lambda v: v >= 0) if allow_zero else (lambda v: v > 0)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low_ok(value) and value <= 1):
    raise ValueError(f'{name} must be a number in {"[0" if allow_zero else "(0"}, 1]; got {value!r}')
  return float(value)


def _non_negative(value, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float('inf'):
    raise ValueError(f'{name} must be a finite number >= 0; got {value!r}')
  return float(value)


def bandit_score(rewards: jax.Array, probs: jax.Array) -> jax.Array:
  """Total reward per trial, averaged over the query trials: rewards `[trials, steps]`."""
  del probs
  return jnp.mean(jnp.sum(rewards, axis=-1))


def bandit_regret(rewards: jax.Array, probs: jax.Array) -> jax.Array:
  """`[1]`: the expected reward of always pulling the best arm minus the reward won, averaged over query trials;
  probs `[trials, arms]`."""
  return jnp.mean(rewards.shape[-1] * jnp.max(probs, axis=-1) - jnp.sum(rewards, axis=-1))[None]


def _register() -> None:
  from jmeta.envs.bandit import bernoulli_bandit
  from jmeta.experiments import Algorithm, Data, Dataset, Option, Recipe, register_algorithm, register_dataset

  def env_of(c):
    if c.dataset == 'bandit':
      return bernoulli_bandit(c.arms), c.pulls
    raise ValueError(f'rl2 runs on bandit; got {c.dataset}')

  def load(c, data_dir=None):
    del data_dir
    env, _ = env_of(c)
    sample = trial_tasks(env)

    def model(role):
      raise ValueError(f'the bandit dataset has no {role!r} model; its learners act in the environment (rl2)')

    def no_loss(predictions, targets):
      raise ValueError('the bandit dataset has no predictor loss; rl2 computes its own from the rewards')

    example = sample(jax.random.PRNGKey(0)).support.x
    return Data(sample, sample, sample, model, jnp.concatenate([example, example]), no_loss, None, bandit_score,
                'reward', breakdown=bandit_regret, breakdown_names=('regret',))

  register_dataset(Dataset(
      name='bandit', kind='environment',
      summary='k-armed Bernoulli bandits, each arm paying 1 with a probability U[0, 1] per task, trials of n pulls '
      '(Duan et al., 2016); the metric is the total reward per trial, higher is better',
      options=(Option('arms', 'arms per bandit, k (default 5)'),
               Option('pulls', 'pulls per trial, n: one-step episodes (default 10)')),
      defaults=dict(arms=5, pulls=10), load=load))

  def build(c, data):
    env, steps = env_of(c)
    module = GRUPolicy(c.arms, c.hidden)
    learner = rl2(module, env, steps, discount=c.discount, gae_lambda=c.gae_lambda, clip=c.clip,
                  value_coef=c.value_coef, entropy_coef=c.entropy_coef)
    return Recipe(lambda key: init_params(module, key, env), learner, learner)

  # Duan et al. (2016) train a GRU with TRPO on large batches of trials (256 units for bandits, as we recall their
  # appendix; the paper could not be re-read offline when this was written). PPO's clip 0.2 and value
  # coefficient 0.5 are Schulman et al.'s (2017). The rest is ours, for a 2-core CPU (benchmarks/meta_rl.py): 64
  # units, 256 trials per update at n <= 10 and 64 beyond, Adam 1e-3, entropy bonus 0.01, discount 0.99, GAE's
  # lambda 0.3; 20,000 updates at n <= 10 (about 5 minutes here), 5,000 beyond.
  published = {'bandit': dict(hidden=64, meta_batch=lambda f: 256 if f['pulls'] <= 10 else 64,
                              steps=lambda f: 20_000 if f['pulls'] <= 10 else 5_000, outer_opt='adam', outer_lr=1e-3,
                              log_every=100)}
  register_algorithm(Algorithm(
      name='rl2', family='memory-based', title='RL^2',
      paper='Duan, Schulman, Chen, Bartlett, Sutskever & Abbeel, 2016, arXiv:1611.02779',
      options=(
          Option('hidden', 'GRU units (default 256; the bandit recipe: 64)', default=256),
          Option('discount', 'discount over the trial, in (0, 1] (default 0.99)', float, default=0.99,
                 validate=_unit),
          Option('gae_lambda', "GAE's lambda, in [0, 1] (default 0.3)", float, default=0.3,
                 validate=lambda v, n: _unit(v, n, allow_zero=True)),
          Option('clip', "PPO's clip of the probability ratio (default 0.2)", float, default=0.2),
          Option('value_coef', 'weight of the value loss (default 0.5)', float, default=0.5),
          Option('entropy_coef', 'weight of the entropy bonus, >= 0 (default 0.01)', float, default=0.01,
                 validate=_non_negative),
      ),
      published=published, build=build, grad_of_mean=True))


_register()
