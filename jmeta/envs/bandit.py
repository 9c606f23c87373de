"""Bernoulli multi-armed bandits, the RL^2 benchmark (Duan et al., 2016, arXiv:1611.02779, section 4.1)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jmeta.checks import check_positive_int
from jmeta.envs.base import Environment, check_array


class BanditParams(NamedTuple):
  """One bandit task: `probs [arms]`, each arm's probability of paying reward 1."""
  probs: jax.Array


def bernoulli_bandit(arms: int) -> Environment:
  """A task distribution of `arms`-armed Bernoulli bandits, each arm's probability uniform on [0, 1] per task.

  Episodes last one step (pull an arm, receive 1 with its probability, else 0; `done` is always True), so a trial
  of `n` episodes is `rollout(env, policy, ..., steps=n)`; Duan et al. use `arms` in {5, 10, 50} and `n` in
  {10, 100, 500}. There is no state (`()`), and the observation is a constant `[1]` zero: all a learner knows
  comes from the previous action and reward the rollout gives its policy.

  `reset` and `step` refuse, when traced, task probabilities that are not float `[arms]` and actions that are not
  integer scalars; `step` refuses a concrete action outside `0..arms-1`, and pays NaN for a traced one.

  Returns:
    An `Environment` with `BanditParams` tasks, int32 scalar actions in `0..arms-1`, and float32 `[1]` observations.
  """
  arms = check_positive_int(arms, 'arms')

  def sample_params(key: jax.Array) -> BanditParams:
    return BanditParams(jax.random.uniform(key, (arms,)))

  def reset(key: jax.Array, params: BanditParams):
    del key
    check_array(params.probs, (arms,), 'f', 'bandit task probs')
    return (), jnp.zeros((1,), jnp.float32)

  def step(key: jax.Array, state, action: jax.Array, params: BanditParams):
    probs = check_array(params.probs, (arms,), 'f', 'bandit task probs')
    action = check_array(action, (), 'i', 'bandit action (an arm index)')
    if not isinstance(action, jax.core.Tracer) and not 0 <= int(action) < arms:
      raise ValueError(f'bandit action: expected an arm in 0..{arms - 1}; got {int(action)}')
    # A traced action cannot be checked when traced; one outside 0..arms-1 pays NaN rather than the clamped
    # index's reward, so the error shows in the returns instead of passing silently.
    valid = (action >= 0) & (action < arms)
    reward = jnp.where(valid, jax.random.bernoulli(key, probs[action]).astype(jnp.float32), jnp.nan)
    return state, jnp.zeros((1,), jnp.float32), reward, jnp.ones((), jnp.bool_)

  return Environment(sample_params, reset, step, observation=jax.ShapeDtypeStruct((1,), jnp.float32),
                     action=jax.ShapeDtypeStruct((), jnp.int32))
