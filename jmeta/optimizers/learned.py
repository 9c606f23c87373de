"""Learned optimizers as optax transformations: the parameters of the optimizer are meta-parameters.

`lstm_optimizer(meta_params)` is the coordinatewise LSTM of Andrychowicz et al. (2016, arXiv:1606.04474) and
`mlp_optimizer(meta_params)` the small per-parameter MLP of learned_optimization (Metz et al., 2022,
arXiv:2203.11860, `learned_optimizers/mlp_lopt.py`). Both return an `optax.GradientTransformation`, so they go
wherever jmeta or optax takes an optimizer (`jmeta.maml(apply_fn, inner_opt=lstm_optimizer(meta_params))`), and
both are differentiable in `meta_params`. Their states are NamedTuples of arrays shaped like the parameters.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

PyTree = Any

LOG_SIGN_P = 10.0
"""The preprocessing constant p of Andrychowicz et al. (2016), appendix A."""

MLP_DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999)
"""Momentum decays of learned_optimization's MLPLOpt."""
RMS_DECAY = 0.999
TIMESCALES = (1, 3, 10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000)
"""Training-step features `tanh(step / timescale)`, as MLPLOpt."""
MLP_FEATURES = 2 + 2 * len(MLP_DECAYS) + 1
"""Per-parameter features of the MLP optimizer before the time features: p, g, 5 momenta, 5 momenta * rsqrt(rms),
rsqrt(rms)."""


def log_sign(g: jax.Array, p: float = LOG_SIGN_P) -> jax.Array:
  """The gradient preprocessing of Andrychowicz et al. (2016), appendix A: `g [...] -> [..., 2]`.

  `(log|g| / p, sign g)` where `|g| >= exp(-p)`, else `(-1, exp(p) g)`.
  """
  big = jnp.abs(g) >= math.exp(-p)
  safe = jnp.where(big, jnp.abs(g), 1.0)
  first = jnp.where(big, jnp.log(safe) / p, -1.0)
  second = jnp.where(big, jnp.sign(g), math.exp(p) * g)
  return jnp.stack([first, second], axis=-1)


# The LSTM optimizer.

class LSTMOptimizerState(NamedTuple):
  """Each leaf is `[*param.shape, layers, hidden]`: one LSTM per coordinate (shared weights)."""
  h: PyTree
  c: PyTree


def init_lstm_meta_params(key: jax.Array, hidden: int = 20, layers: int = 2, inputs: int = 2) -> dict:
  """Meta-parameters of `lstm_optimizer`: `layers` LSTM layers of `hidden` units (the paper: 2 of 20) and a linear
  output. `{'layer0': {'w_x': [inputs, 4 h], 'w_h': [h, 4 h], 'b': [4 h]}, ..., 'out': {'w': [h], 'b': []}}`.

  Weights are N(0, 1 / fan_in), the forget gates' biases 1, the output's weights N(0, 0.01^2).
  """
  keys = jax.random.split(key, layers + 1)
  params = {}
  for i in range(layers):
    fan_in = inputs if i == 0 else hidden
    kx, kh = jax.random.split(keys[i])
    b = jnp.zeros((4 * hidden,)).at[hidden:2 * hidden].set(1.0)  # gate order i, f, g, o
    params[f'layer{i}'] = {'w_x': jax.random.normal(kx, (fan_in, 4 * hidden)) / math.sqrt(fan_in),
                           'w_h': jax.random.normal(kh, (hidden, 4 * hidden)) / math.sqrt(hidden), 'b': b}
  params['out'] = {'w': 0.01 * jax.random.normal(keys[-1], (hidden,)), 'b': jnp.zeros(())}
  return params


def lstm_cell(layer: dict, x: jax.Array, h: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One LSTM step on `x [n, in]`, `h, c [n, hidden]` (gates i, f, g, o; no peepholes)."""
  gates = x @ layer['w_x'] + h @ layer['w_h'] + layer['b']
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  return jax.nn.sigmoid(o) * jnp.tanh(c), c


def _lstm_shape(meta_params: dict) -> tuple[int, int]:
  layers = sorted(k for k in meta_params if k.startswith('layer'))
  if not layers or 'out' not in meta_params:
    raise ValueError('lstm_optimizer: meta_params must hold layer0, layer1, ... and out (init_lstm_meta_params); '
                     f'got keys {sorted(meta_params)}')
  return len(layers), meta_params['layer0']['w_h'].shape[0]


def lstm_optimizer(meta_params: dict, *, scale: float = 0.1, p: float = LOG_SIGN_P,
                   preprocess: bool = True) -> optax.GradientTransformation:
  """The coordinatewise LSTM optimizer of Andrychowicz et al. (2016, arXiv:1606.04474).

  Every coordinate of every parameter runs its own copy of one small LSTM (weights shared), fed the coordinate's
  gradient, preprocessed by `log_sign` (appendix A) unless `preprocess=False`; the update is `scale` times a
  linear read-out of the top layer's hidden state. The paper's LSTM has 2 layers of 20 units.

  Args:
    meta_params: from `init_lstm_meta_params`.
    scale: multiplies the output (ours: 0.1).
    p: the preprocessing constant (the paper: 10).
    preprocess: feed `log_sign(g)` (2 inputs) or `g` itself (1 input).
  Returns:
    An optax transformation; `update(grads, state, params=None) -> (updates, state)`, updates to add.
  """
  layers, hidden = _lstm_shape(meta_params)
  inputs = meta_params['layer0']['w_x'].shape[0]
  if inputs != (2 if preprocess else 1):
    raise ValueError(f'lstm_optimizer: layer0 takes {inputs} inputs; preprocess={preprocess} feeds '
                     f'{2 if preprocess else 1}')

  def init(params: PyTree) -> LSTMOptimizerState:
    zeros = jax.tree.map(lambda x: jnp.zeros(jnp.shape(x) + (layers, hidden), jnp.result_type(x)), params)
    return LSTMOptimizerState(zeros, zeros)

  def one(g: jax.Array, h: jax.Array, c: jax.Array):
    n = g.size
    x = log_sign(g.reshape(n), p) if preprocess else g.reshape(n, 1)
    x = x.astype(h.dtype)
    h, c = h.reshape(n, layers, hidden), c.reshape(n, layers, hidden)
    hs, cs = [], []
    for i in range(layers):
      hi, ci = lstm_cell(meta_params[f'layer{i}'], x, h[:, i], c[:, i])
      hs.append(hi)
      cs.append(ci)
      x = hi
    out = scale * (x @ meta_params['out']['w'] + meta_params['out']['b'])
    shape = g.shape + (layers, hidden)
    return out.reshape(g.shape).astype(g.dtype), jnp.stack(hs, 1).reshape(shape), jnp.stack(cs, 1).reshape(shape)

  def update(grads: PyTree, state: LSTMOptimizerState, params: PyTree = None):
    del params
    leaves, treedef = jax.tree.flatten(grads)
    hs, cs = treedef.flatten_up_to(state.h), treedef.flatten_up_to(state.c)
    outs = [one(g, h, c) for g, h, c in zip(leaves, hs, cs)]
    unflat = lambda i: treedef.unflatten([o[i] for o in outs])
    return unflat(0), LSTMOptimizerState(unflat(1), unflat(2))

  return optax.GradientTransformation(init, update)


# The MLP optimizer.

class MLPOptimizerState(NamedTuple):
  """`momenta` leaves `[*param.shape, len(MLP_DECAYS)]`, `rms` leaves like the params, `count` the steps taken."""
  momenta: PyTree
  rms: PyTree
  count: jax.Array


def init_mlp_meta_params(key: jax.Array, hidden: int = 32, layers: int = 2) -> dict:
  """Meta-parameters of `mlp_optimizer`: `layers` ReLU layers of `hidden` units (MLPLOpt: 2 of 32) and an output
  of 2 (direction, log-magnitude). `{'layer0': {'w': [features, h], 'b': [h]}, ..., 'out': {'w': [h, 2], 'b': [2]}}`
  with `features = MLP_FEATURES + len(TIMESCALES)`; weights N(0, 1 / fan_in), biases 0."""
  sizes = [MLP_FEATURES + len(TIMESCALES)] + [hidden] * layers + [2]
  keys = jax.random.split(key, len(sizes) - 1)
  params = {}
  for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    name = 'out' if i == len(sizes) - 2 else f'layer{i}'
    params[name] = {'w': jax.random.normal(k, (a, b)) / math.sqrt(a), 'b': jnp.zeros((b,))}
  return params


def second_moment_normalize(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """`x [..., features]` divided by the root mean square of each feature over the leading axes (MLPLOpt)."""
  axes = tuple(range(x.ndim - 1))
  return x * jax.lax.rsqrt(eps + jnp.mean(jnp.square(x), axis=axes, keepdims=True))


def mlp_features(p: jax.Array, g: jax.Array, momenta: jax.Array, rms: jax.Array, count: jax.Array) -> jax.Array:
  """The MLP optimizer's inputs for one parameter: `[*p.shape, MLP_FEATURES + len(TIMESCALES)]`, the per-parameter
  features normalised by their second moment over the tensor, then the step's `tanh(count / timescale)`."""
  rsqrt = jax.lax.rsqrt(rms + 1e-6)[..., None]
  feats = jnp.concatenate([p[..., None], g[..., None], momenta, momenta * rsqrt, rsqrt], axis=-1)
  feats = second_moment_normalize(feats.reshape(-1, MLP_FEATURES)).reshape(feats.shape)
  time = jnp.tanh(count.astype(feats.dtype) / jnp.asarray(TIMESCALES, feats.dtype))
  return jnp.concatenate([feats, jnp.broadcast_to(time, p.shape + time.shape)], axis=-1)


def mlp_optimizer(meta_params: dict, *, step_mult: float = 0.001, exp_mult: float = 0.001,
                  decays: Sequence[float] = MLP_DECAYS) -> optax.GradientTransformation:
  """The per-parameter MLP optimizer of learned_optimization (MLPLOpt; Metz et al., 2022, arXiv:2203.11860).

  Each coordinate's features (`mlp_features`: parameter, gradient, momenta at `decays`, the same over the root of a
  second-moment accumulator, that root's reciprocal, each normalised by its second moment over the tensor, and
  the step's tanh time features) go through one shared MLP with two outputs, a direction `d` and a magnitude `m`;
  the step is `-d * exp(m * exp_mult) * step_mult` (MLPLOpt's defaults: 0.001 and 0.001).

  Args:
    meta_params: from `init_mlp_meta_params`.
  Returns:
    An optax transformation; `update(grads, state, params)` needs `params`.
  """
  if len(decays) != len(MLP_DECAYS):
    raise ValueError(f'mlp_optimizer: {len(MLP_DECAYS)} momentum decays expected (the features are sized for '
                     f'them); got {list(decays)}')
  if 'out' not in meta_params or 'layer0' not in meta_params:
    raise ValueError(f'mlp_optimizer: meta_params must hold layer0, ... and out (init_mlp_meta_params); got keys '
                     f'{sorted(meta_params)}')
  layers = sorted(k for k in meta_params if k.startswith('layer'))
  betas = jnp.asarray(decays)

  def init(params: PyTree) -> MLPOptimizerState:
    momenta = jax.tree.map(lambda x: jnp.zeros(jnp.shape(x) + (len(decays),), jnp.result_type(x)), params)
    rms = jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.result_type(x)), params)
    return MLPOptimizerState(momenta, rms, jnp.zeros((), jnp.int32))

  def net(x: jax.Array) -> jax.Array:
    for name in layers:
      x = jax.nn.relu(x @ meta_params[name]['w'] + meta_params[name]['b'])
    return x @ meta_params['out']['w'] + meta_params['out']['b']

  def update(grads: PyTree, state: MLPOptimizerState, params: PyTree = None):
    if params is None:
      raise ValueError('mlp_optimizer: update needs params (its features include the parameters)')
    leaves, treedef = jax.tree.flatten(grads)
    ps, ms, rs = (treedef.flatten_up_to(t) for t in (params, state.momenta, state.rms))
    updates, momenta, rmss = [], [], []
    for g, p, m, r in zip(leaves, ps, ms, rs):
      m = betas.astype(m.dtype) * m + (1 - betas.astype(m.dtype)) * g[..., None]
      r = RMS_DECAY * r + (1 - RMS_DECAY) * jnp.square(g)
      out = net(mlp_features(p, g, m, r, state.count).astype(meta_params['out']['w'].dtype))
      step = out[..., 0] * jnp.exp(out[..., 1] * exp_mult) * step_mult
      updates.append((-step).astype(g.dtype))
      momenta.append(m)
      rmss.append(r)
    return (treedef.unflatten(updates),
            MLPOptimizerState(treedef.unflatten(momenta), treedef.unflatten(rmss), state.count + 1))

  return optax.GradientTransformation(init, update)
