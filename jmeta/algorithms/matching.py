"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu and Wierstra, 2016, arXiv:1606.04080)."""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp

from jmeta.algorithms._metric_based import (OMNIGLOT_EPISODES, EmbedFn, SupportEmbeddings, check_embeddings,
                                            check_support, check_ways, embed, embedding_recipe, query_cross_entropy)
from jmeta.base import MetaLearner, Params
from jmeta.experiments import Algorithm, Option, Published, register_algorithm
from jmeta.tasks import Split


def cosine_similarity(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Cosine similarities `[n, m]` between rows of `a: [n, dim]` and `b: [m, dim]`; zero rows give 0."""

  def unit(v):
    return v * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(v), axis=-1, keepdims=True), eps * eps))

  return unit(a) @ unit(b).T


def _lstm(params: Params, carry: tuple[jax.Array, jax.Array], x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One step of `flax.linen.LSTMCell`; `carry = (c, h)`."""
  features = jnp.shape(carry[1])[-1]
  return nn.LSTMCell(features).apply({'params': params}, carry, x)[0]


def fce_init(key: jax.Array, dim: int) -> Params:
  """Parameters of the full-context embeddings for embeddings of size `dim`: a bidirectional LSTM over the support
  set ('forward', 'backward') and the query's attention LSTM ('attention', input `[query, readout]`)."""
  k_fwd, k_bwd, k_att = jax.random.split(key, 3)
  cell = nn.LSTMCell(dim)
  zeros = jnp.zeros((dim,))
  carry = (zeros, zeros)
  return {'forward': cell.init(k_fwd, carry, zeros)['params'],
          'backward': cell.init(k_bwd, carry, zeros)['params'],
          'attention': cell.init(k_att, carry, jnp.zeros((2 * dim,)))['params']}


def fce_support(params: Params, g: jax.Array) -> jax.Array:
  """g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i): a bidirectional LSTM over the support embeddings `g: [n, dim]`, in
  the order given (Vinyals et al., 2016, arXiv:1606.04080, appendix A.2). Returns `[n, dim]`."""
  zeros = jnp.zeros_like(g[0])

  def run(cell_params, xs):
    def step(carry, x):
      carry = _lstm(cell_params, carry, x)
      return carry, carry[1]
    return jax.lax.scan(step, (zeros, zeros), xs)[1]

  forward = run(params['forward'], g)
  backward = run(params['backward'], g[::-1])[::-1]
  return forward + backward + g


def fce_query(params: Params, f: jax.Array, g: jax.Array, steps: int) -> jax.Array:
  """f(x, S) = h_K of the attention LSTM: for k = 1..K, h^_k, c_k = LSTM([f'(x), r_{k-1}], h_{k-1}, c_{k-1}),
  h_k = h^_k + f'(x), r_k = sum_i softmax_i(h_k . g_i) g_i, from h^_0 = c_0 = 0 (Vinyals et al., 2016,
  arXiv:1606.04080, appendix A.1). The paper's hidden state `[h, r]` enters the gates linearly, so `r` is fed with
  the input. `f: [queries, dim]`, `g: [support, dim]` (already full-context). Returns `[queries, dim]`."""

  def read(h):
    return jax.nn.softmax(h @ g.T, axis=-1) @ g

  def step(carry, _):
    c, h = carry
    c, h_hat = _lstm(params['attention'], (c, h), jnp.concatenate([f, read(h)], axis=-1))
    return (c, h_hat + f), None

  (_, h), _ = jax.lax.scan(step, (jnp.zeros_like(f), f), None, length=steps)
  return h


def matching_net(embed_fn: EmbedFn, ways: int, *, fce: bool = False, embed_dim: int | None = None,
                 fce_steps: int = 5, scale: float = 1.0, learn_scale: bool = False,
                 transductive: bool = True) -> MetaLearner:
  """Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu and Wierstra, 2016, arXiv:1606.04080).

  P(y | x, S) = sum_i a(x, x_i) y_i with a = softmax over the support of `scale` times the cosine similarity of
  f(x, S) and g(x_i, S); `predict` returns log P (so `softmax(predict)` is P); the loss is the query negative
  log-likelihood. Without FCE, f = g = the embedding; with it, g is a bidirectional LSTM over the support set and
  f an attention LSTM run for `fce_steps` steps (the paper's K, which it does not give).

  The paper's attention is `scale = 1`. Cosines lie in [-1, 1] (in [0, 1] after a ReLU encoder), so that softmax
  cannot be sharp: at 5-way 1-shot the true class gets at most e / (e + 4) = 0.40 of the mass, a loss floor of
  0.9 nats however good the embedding. `learn_scale` learns the scale, starting from `scale` (the metric scaling of
  Oreshkin, Rodriguez and Lacoste, 2018, arXiv:1805.10123).

  Args:
    embed_fn: `embed_fn(params, x) -> [examples, dim]` for `x: [examples, *input_shape]`.
    ways: number of classes; labels are integers in `0..ways-1`.
    fce: whether to use full-context embeddings.
    embed_dim: `dim`, needed with `fce` to build the LSTMs.
    fce_steps: K, the attention LSTM's steps.
    scale: the factor of the cosine similarities in the attention softmax (its initial value with `learn_scale`).
    learn_scale: whether the scale is a meta-parameter (stored as its logarithm).
    transductive: if False, queries are embedded as `embed_fn(params, x, reference=support.x)`.

  Returns:
    A `MetaLearner` over `params = {'embed': model_params}`, plus `'fce'` (the LSTM cells) with `fce` and
    `'log_scale'` (a scalar) with `learn_scale`.
    `adapt(params, support) -> SupportEmbeddings`; `predict(state, x) -> [examples, ways]` log-probabilities;
    `loss(params, task) -> (loss, {'loss', 'accuracy'})`.
  """
  ways = check_ways(ways, 'matching_net')
  if fce and (embed_dim is None or int(embed_dim) < 1):
    raise ValueError(f'matching_net: fce=True needs embed_dim, the size of the embeddings; got {embed_dim!r}')
  if fce and int(fce_steps) < 1:
    raise ValueError(f'matching_net: fce_steps must be at least 1; got {fce_steps!r}')
  if not float(scale) > 0:
    raise ValueError(f'matching_net: scale must be positive; got {scale!r}')
  dim = int(embed_dim) if fce else None

  def init(key: jax.Array, model_params: Params) -> Params:
    params = {'embed': model_params}
    if fce:
      params['fce'] = fce_init(key, dim)
    if learn_scale:
      params['log_scale'] = jnp.log(jnp.asarray(scale, jnp.result_type(float)))
    return params

  def adapt(params: Params, support: Split) -> SupportEmbeddings:
    check_support(support, ways, 'matching_net')
    n = jnp.shape(support.y)[0]
    g = check_embeddings(embed_fn(params['embed'], support.x), n, 'matching_net (support)', dim)
    if fce:
      g = fce_support(params['fce'], g)
    labels = jax.nn.one_hot(support.y, ways, dtype=g.dtype)
    return SupportEmbeddings(params, g, labels, None if transductive else support.x)

  def predict(state: SupportEmbeddings, x: jax.Array) -> jax.Array:
    f = embed(embed_fn, state.params['embed'], x, state.reference)
    f = check_embeddings(f, jnp.shape(x)[0], 'matching_net (query)', jnp.shape(state.support)[1])
    if fce:
      f = fce_query(state.params['fce'], f, state.support, int(fce_steps))
    factor = jnp.exp(state.params['log_scale']) if learn_scale else scale
    attention = jax.nn.softmax(factor * cosine_similarity(f, state.support), axis=-1)
    probs = attention @ state.labels
    return jnp.log(jnp.maximum(probs, jnp.finfo(probs.dtype).tiny))

  loss = query_cross_entropy(adapt, predict, ways, 'matching_net')
  return MetaLearner(init, adapt, predict, loss, jax.grad(loss, has_aux=True))


def _upgrade(saved: dict) -> dict:
  """Runs saved before the scale existed trained with the paper's attention (a fixed scale of 1)."""
  return saved if 'attention_scale' in saved else {**saved, 'attention_scale': 1.0, 'learn_attention_scale': False}


def _positive(value, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float('inf'):
    raise ValueError(f'{name} must be positive; got {value!r}')
  return float(value)


register_algorithm(Algorithm(
    name='matching', family='metric-based', title='matching networks',
    paper='Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, 2016, arXiv:1606.04080',
    options=(
        Option('attention_scale', 'factor of the cosine similarities in the attention softmax (default: published; '
               '1 is the paper\'s)', float, default=1.0, validate=_positive),
        Option('learn_attention_scale', 'learn the scale, from --attention-scale (the omniglot default)', bool,
               default=False, false_flag='--fixed-attention-scale'),
    ),
    # The paper's attention softmax over cosines (scale 1) stalls near 94% at 5-way 1-shot (see `matching_net`);
    # a learned scale from 10 (Oreshkin et al., 2018) trains it.
    published={'omniglot': {**OMNIGLOT_EPISODES, 'attention_scale': 10.0, 'learn_attention_scale': True}},
    build=embedding_recipe('embedding', lambda c, embed_fn, ways, shape: matching_net(
        embed_fn, ways, scale=c.attention_scale, learn_scale=c.learn_attention_scale)),
    upgrade=_upgrade,
    results=(
        Published('omniglot', {'ways': 5, 'shots': 1}, 'accuracy %', 98.1, 'Vinyals et al. (2016), table 1'),
        Published('omniglot', {'ways': 5, 'shots': 5}, 'accuracy %', 98.9, 'Vinyals et al. (2016), table 1'),
    )))
