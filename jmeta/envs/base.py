"""The environment interface: a task distribution and a pure reset and step, as a NamedTuple of functions."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp

PyTree = Any
EnvParams = PyTree
"""One task: what `sample_params` draws and `reset` and `step` read (a bandit's arm probabilities, a goal)."""
EnvState = PyTree


class Environment(NamedTuple):
  """A distribution of tasks and their dynamics, all pure functions of their arguments (jittable, vmappable).

  Attributes:
    sample_params: `(key) -> params`, one task. A trial (RL^2) or an adaptation batch (MAML-RL) holds it fixed
      across episodes; `jax.vmap` over a batch of params runs a batch of tasks.
    reset: `(key, params) -> (state, obs)`, the start of an episode of task `params`.
    step: `(key, state, action, params) -> (state, obs, reward, done)`: `reward` a float32 scalar, `done` a bool
      scalar that ends the episode (the rollout then resets; `step` itself never does).
    observation: shape and dtype of one observation, `jax.ShapeDtypeStruct` (to initialise a policy).
    action: shape and dtype of one action, `jax.ShapeDtypeStruct`; at a trial's first step the rollout feeds the
      policy -1 (integer actions) or zeros as the previous action (`jmeta.envs.rollout.no_action`).

  `reset` and `step` take their arguments in gymnax's order (`env.reset(key, params)`,
  `env.step(key, state, action, params)`) and return the state first, as a `lax.scan` carry; a gymnax environment
  becomes one with `reset=lambda k, p: env.reset_env(k, p)[::-1]` and
  `step=lambda k, s, a, p: (lambda o, s, r, d, _: (s, o, r, d))(*env.step_env(k, s, a, p))`.
  """
  sample_params: Callable[[jax.Array], EnvParams]
  reset: Callable[[jax.Array, EnvParams], tuple[EnvState, jax.Array]]
  step: Callable[[jax.Array, EnvState, jax.Array, EnvParams], tuple[EnvState, jax.Array, jax.Array, jax.Array]]
  observation: jax.ShapeDtypeStruct
  action: jax.ShapeDtypeStruct


class Policy(Protocol):

  def __call__(self, params: PyTree, carry: PyTree, obs: jax.Array, prev_action: jax.Array,
               prev_reward: jax.Array, done: jax.Array, key: jax.Array) -> tuple[PyTree, jax.Array, PyTree]:
    """`(carry, action, aux)` for one step.

    `carry` is the policy's memory (an RNN state for RL^2, `()` for a feedforward policy); it persists across the
    episodes of a trial. `prev_action`, `prev_reward` and `done` are the previous step's (at a trial's first step
    -1 for integer actions or zeros, 0, and True; `done` True means `obs` starts a new episode): RL^2 feeds them,
    the action one-hot, to its recurrent network
    (Duan et al., 2016, arXiv:1611.02779, section 2.2), other policies ignore them. `aux` is what the learner
    needs later of each step (log-probabilities, values); the rollout stacks it.
    """


def check_array(value: Any, shape: tuple[int, ...], kind: str, what: str) -> jax.Array:
  """`value` as an array if its shape is `shape` and its dtype of `kind` ('f' float, 'i' integer), else a
  `ValueError` naming `what` and the expected shape; a check of static properties, so it runs at trace time."""
  value = jnp.asarray(value)
  if value.shape != shape or not (jnp.issubdtype(value.dtype, jnp.floating) if kind == 'f' else
                                  jnp.issubdtype(value.dtype, jnp.integer)):
    expected = 'a float' if kind == 'f' else 'an integer'
    raise ValueError(f'{what}: expected {expected} array of shape {shape}; got {value.dtype} {value.shape}')
  return value
