"""Rollouts: a policy acting in one task for a fixed number of steps, in one `lax.scan`, resetting on `done`."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jmeta.checks import check_positive_int
from jmeta.envs.base import EnvParams, Environment, Policy, PyTree


class Trajectory(NamedTuple):
  """What a rollout saw and did, each leaf with a leading time axis `[steps, ...]`.

  Attributes:
    obs: `[steps, *observation_shape]`, the observation the policy acted on.
    action: `[steps, *action_shape]`, in the environment's action dtype.
    reward: `[steps]` float32.
    done: `[steps]` bool, whether the step ended its episode (the next observation starts a new one).
    aux: the policy's `aux` of each step, stacked.

  For RL learners a batch of trajectories (a leading axis added by `jax.vmap` of `rollout`) is the support set:
  MAML-RL adapts on trajectories of the pre-update policy and is scored on trajectories of the adapted one.
  """
  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  done: jax.Array
  aux: PyTree


def no_action(env: Environment) -> jax.Array:
  """The previous action a policy sees at a trial's first step: -1 for integer actions (`jax.nn.one_hot(-1, n)` is
  all zeros, as RL^2's input is before any action), zeros otherwise."""
  fill = -1 if jnp.issubdtype(env.action.dtype, jnp.integer) else 0
  return jnp.full(env.action.shape, fill, env.action.dtype)


def rollout(env: Environment, policy: Policy, policy_params: PyTree, env_params: EnvParams, key: jax.Array,
            steps: int, carry: PyTree = ()) -> Trajectory:
  """`steps` steps of `policy` in the task `env_params`, resetting after each `done`: a trial, as a `Trajectory`.

  One `lax.scan`: pure in its arguments, so `jax.jit` and `jax.vmap` (over tasks, keys or policy params) apply, and
  `jax.grad` through it when the environment is differentiable. The policy's `carry` persists across episodes, so
  a trial of several episodes of one task is one call (RL^2, Duan et al., 2016, arXiv:1611.02779); a batch of
  independent episodes (MAML-RL, Finn et al., 2017, arXiv:1703.03400) is `jax.vmap` over keys with `steps` the
  horizon.

  Keys: `reset_key, scan_key = jax.random.split(key)` starts the first episode, and step `t` splits
  `jax.random.split(scan_key, steps)[t]` into 3 keys: the policy's, `env.step`'s, and that of the `env.reset`
  whose result replaces the state when the step is `done` (computed at every step and selected, as under `vmap`
  a branch would be).

  Args:
    env: the environment; policy: `policy(policy_params, carry, obs, prev_action, prev_reward, done, key) ->
      (carry, action, aux)` (`jmeta.envs.Policy`).
    policy_params, env_params: the policy's parameters and the task.
    key: a PRNG key. steps: a static int. carry: the policy's initial memory.

  Returns:
    A `Trajectory` with leaves `[steps, ...]`.
  """
  steps = check_positive_int(steps, 'steps')
  reset_key, scan_key = jax.random.split(key)
  state, obs = env.reset(reset_key, env_params)
  start = (carry, state, obs, no_action(env), jnp.zeros((), jnp.float32), jnp.ones((), jnp.bool_))

  def one_step(c, step_key):
    carry, state, obs, prev_action, prev_reward, prev_done = c
    policy_key, env_key, reset_key = jax.random.split(step_key, 3)
    carry, action, aux = policy(policy_params, carry, obs, prev_action, prev_reward, prev_done, policy_key)
    if jnp.shape(action) != env.action.shape:
      raise ValueError(f'rollout: the policy returned an action of shape {jnp.shape(action)}; the environment takes '
                       f'{env.action.shape}')
    action = jnp.asarray(action, env.action.dtype)
    state, next_obs, reward, done = env.step(env_key, state, action, env_params)
    done = jnp.asarray(done, jnp.bool_)
    fresh_state, fresh_obs = env.reset(reset_key, env_params)
    state = jax.tree.map(lambda f, s: jnp.where(done, f, s), fresh_state, state)
    next_obs = jnp.where(done, fresh_obs, next_obs)
    reward = jnp.asarray(reward, jnp.float32)
    return (carry, state, next_obs, action, reward, done), Trajectory(obs, action, reward, done, aux)

  _, trajectory = jax.lax.scan(one_step, start, jax.random.split(scan_key, steps))
  return trajectory
