"""2-D point navigation to a goal, the MAML-RL benchmark (Finn et al., 2017, arXiv:1703.03400, section 5.3)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jmeta.checks import check_positive_int, check_positive_number
from jmeta.envs.base import Environment, check_array


class NavigationParams(NamedTuple):
  """One navigation task: the `goal [2]`."""
  goal: jax.Array


class NavigationState(NamedTuple):
  """The agent's `position [2]` and the steps taken this episode, `time` int32."""
  position: jax.Array
  time: jax.Array


def navigation_2d(horizon: int = 100, *, goal_range: float = 0.5, max_action: float = 0.1,
                  tolerance: float = 0.01) -> Environment:
  """A point agent moving toward a goal drawn uniformly in `[-goal_range, goal_range]^2` per task.

  Each episode starts at the origin. An action is a velocity `[2]`, clipped to `[-max_action, max_action]` per
  coordinate and added to the position; the observation is the new position and the reward minus its Euclidean
  distance to the goal. The episode is done when both coordinates are within `tolerance` of the goal, or after
  `horizon` steps. Defaults are Finn et al.'s (horizon 100, goal in [-0.5, 0.5]^2, actions in [-0.1, 0.1]); their
  text says negative squared distance, but their code (github.com/cbfinn/maml_rl, `point_env_rand_goal.py`) uses
  the distance and the per-coordinate 0.01 test, as here.

  `reset` and `step` refuse, when traced, a goal that is not float `[2]` and an action that is not float `[2]`.

  Returns:
    An `Environment` with `NavigationParams` tasks, `NavigationState` states, float32 `[2]` actions and
    observations.
  """
  horizon = check_positive_int(horizon, 'horizon')
  goal_range = check_positive_number(goal_range, 'goal_range')
  max_action = check_positive_number(max_action, 'max_action')
  tolerance = check_positive_number(tolerance, 'tolerance')

  def sample_params(key: jax.Array) -> NavigationParams:
    return NavigationParams(jax.random.uniform(key, (2,), minval=-goal_range, maxval=goal_range))

  def reset(key: jax.Array, params: NavigationParams):
    del key
    check_array(params.goal, (2,), 'f', 'navigation task goal')
    position = jnp.zeros((2,), jnp.float32)
    return NavigationState(position, jnp.zeros((), jnp.int32)), position

  def step(key: jax.Array, state: NavigationState, action: jax.Array, params: NavigationParams):
    del key
    goal = check_array(params.goal, (2,), 'f', 'navigation task goal')
    action = check_array(action, (2,), 'f', 'navigation action (a velocity)')
    position = state.position + jnp.clip(action, -max_action, max_action)
    time = state.time + 1
    offset = position - goal
    reward = -jnp.sqrt(jnp.sum(jnp.square(offset)))
    done = jnp.all(jnp.abs(offset) < tolerance) | (time >= horizon)
    return NavigationState(position, time), position, reward, done

  return Environment(sample_params, reset, step, observation=jax.ShapeDtypeStruct((2,), jnp.float32),
                     action=jax.ShapeDtypeStruct((2,), jnp.float32))
