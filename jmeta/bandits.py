"""Classical policies for Bernoulli bandits, the baselines of RL^2's Table 1 (Duan et al., 2016, arXiv:1611.02779).

Each is a pure `jmeta.envs.Policy` over a `BanditCounts` carry, run by the same `jmeta.rollout` as a learned policy
on the same sampled tasks (`jmeta.envs.bernoulli_bandit`): `jax.vmap` of the rollout over tasks and keys. A policy
first adds the previous step's pull (`prev_action`, `prev_reward`; nothing at a trial's first step, where the
previous action is -1) to its counts, then chooses. Ties go to a uniformly random one of the tied arms.

The Gittins policy uses the finite-horizon Gittins index of each arm (Gittins, 1979; Nino-Mora, 2011; Kaufmann,
2016, "On Bayesian index policies for sequential resource allocation", arXiv:1601.01190): with `m` pulls left and
a Beta(1 + wins, 1 + losses) posterior, the index is the largest constant reward `lam` that a player may give up
for pulling the arm at least once and then stopping whenever it likes within the `m` pulls, undiscounted:
`sup_{1 <= tau <= m} E[wins in tau pulls] / E[tau]`. It is the classical Gittins index with the discount replaced
by the remaining horizon; `gittins_table` computes it by the standard calibration dynamic programme.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jmeta.checks import check_positive_int


class BanditCounts(NamedTuple):
  """What a classical bandit policy knows: `pulls [arms]` and `wins [arms]` so far, float32."""
  pulls: jax.Array
  wins: jax.Array


def initial_counts(arms: int) -> BanditCounts:
  """Zero pulls and wins of `arms` arms: the carry to start a trial with."""
  arms = check_positive_int(arms, 'arms')
  return BanditCounts(jnp.zeros((arms,), jnp.float32), jnp.zeros((arms,), jnp.float32))


def _observe(carry: BanditCounts, prev_action: jax.Array, prev_reward: jax.Array) -> BanditCounts:
  if jnp.ndim(prev_action) != 0 or not jnp.issubdtype(jnp.result_type(prev_action), jnp.integer):
    raise ValueError(f'bandit policies take an integer scalar previous action; got {jnp.result_type(prev_action)} '
                     f'{list(jnp.shape(prev_action))}')
  pulled = jax.nn.one_hot(prev_action, carry.pulls.shape[0], dtype=jnp.float32)   # zeros for -1
  return BanditCounts(carry.pulls + pulled, carry.wins + pulled * prev_reward)


def _argmax_random_ties(key: jax.Array, values: jax.Array) -> jax.Array:
  """The index of the largest of `values [arms]`, a uniformly random one among exact ties."""
  best = values == jnp.max(values)
  return jax.random.categorical(key, jnp.where(best, 0.0, -jnp.inf)).astype(jnp.int32)


def random_policy(params, carry, obs, prev_action, prev_reward, done, key):
  """Pulls a uniformly random arm; `params` are unused (pass `()`)."""
  del params, obs, done
  carry = _observe(carry, prev_action, prev_reward)
  return carry, jax.random.randint(key, (), 0, carry.pulls.shape[0], jnp.int32), ()


def thompson_policy(params, carry, obs, prev_action, prev_reward, done, key):
  """Thompson sampling (Thompson, 1933) with Beta(1, 1) priors: draws each arm's probability from its Beta
  posterior and pulls the largest draw. `params` are unused (pass `()`)."""
  del params, obs, done
  carry = _observe(carry, prev_action, prev_reward)
  draws = jax.random.beta(key, 1.0 + carry.wins, 1.0 + carry.pulls - carry.wins)
  return carry, jnp.argmax(draws).astype(jnp.int32), ()


def ucb1_policy(params, carry, obs, prev_action, prev_reward, done, key):
  """UCB1 (Auer, Cesa-Bianchi & Fischer, 2002): each arm once, then the largest `mean + c * sqrt(2 ln t / pulls)`.

  `params` is the exploration scale `c` (1.0 is Auer et al.'s), a float scalar.
  """
  del obs, done
  carry = _observe(carry, prev_action, prev_reward)
  t = jnp.sum(carry.pulls)
  mean = carry.wins / jnp.maximum(carry.pulls, 1.0)
  bonus = params * jnp.sqrt(2.0 * jnp.log(jnp.maximum(t, 1.0)) / jnp.maximum(carry.pulls, 1.0))
  score = jnp.where(carry.pulls == 0, jnp.inf, mean + bonus)
  return carry, _argmax_random_ties(key, score), ()


def epsilon_greedy_policy(params, carry, obs, prev_action, prev_reward, done, key):
  """With probability `params` (epsilon, a float scalar) a random arm, else the largest posterior mean
  `(1 + wins) / (2 + pulls)` (so an untried arm counts as 1/2). `params = 0.0` is the greedy policy."""
  del obs, done
  carry = _observe(carry, prev_action, prev_reward)
  explore_key, random_key, tie_key = jax.random.split(key, 3)
  greedy = _argmax_random_ties(tie_key, (1.0 + carry.wins) / (2.0 + carry.pulls))
  explore = jax.random.uniform(explore_key) < params
  return carry, jnp.where(explore, jax.random.randint(random_key, (), 0, carry.pulls.shape[0], jnp.int32),
                          greedy), ()


def gittins_table(horizon: int, grid: int = 2001) -> np.ndarray:
  """Finite-horizon Gittins indices of a Bernoulli arm with a Beta(1, 1) prior: `[horizon + 1, horizon + 1,
  horizon + 1]`, entry `[m, s, f]` the index with `m` pulls left after `s` wins and `f` losses (0 where `m = 0`).

  The calibration dynamic programme: for a retirement reward `lam`, `Q_m(s, f) = p - lam + p W_{m-1}(s+1, f) +
  (1 - p) W_{m-1}(s, f+1)` with `p = (1 + s) / (2 + s + f)`, `W_m = max(0, Q_m)`, `W_0 = 0`: the value of pulling
  once more and then playing on optimally, above retiring. `Q` decreases in `lam`; the index is its root. `Q` is
  computed for all states at `grid` values of `lam` evenly spaced on [0, 1] (a `lax.scan` over `m`) and each root is
  found by linear interpolation between the two grid values around it: exact wherever `Q` has no kink between
  them (`Q` is piecewise linear in `lam`), within `1 / (grid - 1)` always.
  """
  horizon = check_positive_int(horizon, 'horizon')
  grid = check_positive_int(grid, 'grid', minimum=3)
  size = horizon + 2
  s = np.arange(size, dtype=np.float32)[:, None]
  p = jnp.asarray((1.0 + s) / (2.0 + s + s.T), jnp.float32)
  lam = jnp.linspace(0.0, 1.0, grid, dtype=jnp.float32)[:, None, None]

  def one_more(w, _):
    up = jnp.pad(w[:, 1:, :], ((0, 0), (0, 1), (0, 0)))     # W(s + 1, f)
    right = jnp.pad(w[:, :, 1:], ((0, 0), (0, 0), (0, 1)))  # W(s, f + 1)
    q = p - lam + p * up + (1.0 - p) * right
    above = jnp.sum(q > 0, axis=0) - 1                      # the last grid value with Q > 0 (Q(0) > 0 > Q(1))
    lo = jnp.take_along_axis(q, above[None], 0)[0]
    hi = jnp.take_along_axis(q, above[None] + 1, 0)[0]
    index = (above + lo / (lo - hi)) / (grid - 1)
    return jnp.maximum(q, 0.0), index[:horizon + 1, :horizon + 1]

  @jax.jit
  def table():
    _, indices = jax.lax.scan(one_more, jnp.zeros((grid, size, size), jnp.float32), length=horizon)
    return indices

  return np.concatenate([np.zeros((1, horizon + 1, horizon + 1), np.float32), np.asarray(table())])


def gittins_policy(table: jax.Array):
  """The finite-horizon Gittins policy of a `gittins_table(horizon)`: pulls the arm with the largest index given
  its wins, losses and the pulls left (`horizon` minus the pulls so far). Returns a `jmeta.envs.Policy` whose
  `params` are unused (pass `()`); run it for at most `horizon` steps."""
  table = jnp.asarray(table)
  if table.ndim != 3 or len(set(table.shape)) != 1:
    raise ValueError(f'gittins_policy: table must be [horizon + 1] * 3 from gittins_table; got {list(table.shape)}')
  horizon = table.shape[0] - 1

  def policy(params, carry, obs, prev_action, prev_reward, done, key):
    del params, obs, done
    carry = _observe(carry, prev_action, prev_reward)
    left = jnp.clip(horizon - jnp.sum(carry.pulls), 1, horizon).astype(jnp.int32)
    wins = jnp.clip(carry.wins, 0, horizon).astype(jnp.int32)
    losses = jnp.clip(carry.pulls - carry.wins, 0, horizon).astype(jnp.int32)
    return carry, _argmax_random_ties(key, table[left, wins, losses]), ()

  return policy
