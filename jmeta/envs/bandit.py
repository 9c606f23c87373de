"""Bernoulli multi-armed bandits, the RL^2 benchmark (Duan et al., 2016, arXiv:1611.02779, section 4.1)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jmeta.checks import check_positive_int
from jmeta.envs.base import Environment


class BanditParams(NamedTuple):
  """One bandit task: `probs [arms]`, each arm's probability of paying reward 1."""
  probs: jax.Array


def bernoulli_bandit(arms: int) -> Environment:
  """A task distribution of `arms`-armed Bernoulli bandits, each arm's probability uniform on [0, 1] per task.

  Episodes last one step (pull an arm, receive 1 with its probability, else 0; `done` is always True), so a trial
  of `n` episodes is `rollout(env, policy, ..., steps=n)`; Duan et al. use `arms` in {5, 10, 50} and `n` in
  {10, 100, 500}. There is no state (`()`), and the observation is a constant `[1]` zero: all a learner knows
  comes from the previous action and reward the rollout gives its policy.

  Returns:
    An `Environment` with `BanditParams` tasks, int32 scalar actions in `0..arms-1`, and float32 `[1]` observations.
  """
  arms = check_positive_int(arms, 'arms')

  def sample_params(key: jax.Array) -> BanditParams:
    return BanditParams(jax.random.uniform(key, (arms,)))

  def reset(key: jax.Array, params: BanditParams):
    del key, params
    return (), jnp.zeros((1,), jnp.float32)

  def step(key: jax.Array, state, action: jax.Array, params: BanditParams):
    reward = jax.random.bernoulli(key, params.probs[action]).astype(jnp.float32)
    return state, jnp.zeros((1,), jnp.float32), reward, jnp.ones((), jnp.bool_)

  return Environment(sample_params, reset, step, observation=jax.ShapeDtypeStruct((1,), jnp.float32),
                     action=jax.ShapeDtypeStruct((), jnp.int32))
