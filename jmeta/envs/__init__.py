"""Environment tasks: a task distribution and pure, jittable dynamics, and rollouts in `lax.scan`.

An RL task is an `Environment`'s `params`, drawn by `sample_params(key)` and held fixed while a policy acts in it:
over the several episodes of an RL^2 trial (Duan et al., 2016, arXiv:1611.02779), or over the pre- and
post-update rollouts of MAML-RL (Finn et al., 2017, arXiv:1703.03400). `rollout` runs a whole trial in one
`lax.scan`; `jax.vmap` of it over params runs a batch of tasks.

`reset(key, params)` and `step(key, state, action, params)` take gymnax's arguments, so gymnax environments adapt in
two lambdas (see `Environment`), and gymnax is not a dependency. The two reference environments are written here
rather than taken from gymnax because a meta-learner needs the task distribution itself, `sample_params`, with the
task held fixed across a trial, and gymnax's environments draw their task inside `reset_env`: its
`BernoulliBandit` (two arms with probabilities {p, 1 - p}, Wang et al., 2016) and its `PointRobot` (a goal on a
half-circle, Dorfman et al., 2021) redraw it at every reset, and neither is the task of RL^2's k-armed bandits or
MAML-RL's square. gymnax's `step` also resets by itself; here `rollout` owns the reset, so that the task and the
policy's memory outlive an episode.
"""

from jmeta.envs.bandit import BanditParams, bernoulli_bandit
from jmeta.envs.base import Environment, Policy
from jmeta.envs.navigation import NavigationParams, NavigationState, navigation_2d
from jmeta.envs.rollout import Trajectory, rollout

__all__ = ['BanditParams', 'Environment', 'NavigationParams', 'NavigationState', 'Policy', 'Trajectory',
           'bernoulli_bandit', 'navigation_2d', 'rollout']
