"""Siamese Neural Networks for one-shot recognition (Koch, Zemel and Salakhutdinov, 2015, ICML Deep Learning
Workshop; no arXiv version)."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import optax

from jmeta import losses
from jmeta.algorithms._metric_based import (OMNIGLOT_EPISODES, EmbedFn, SupportEmbeddings, check_classification_task,
                                            check_embeddings, check_support, check_ways, embed, embedding_recipe)
from jmeta.base import MetaLearner, Params
from jmeta.experiments import Algorithm, Published, register_algorithm
from jmeta.tasks import Split, Task


def pair_logits(params: Params, a: jax.Array, b: jax.Array) -> jax.Array:
  """Logits `[n, m]` that row i of `a: [n, dim]` and row j of `b: [m, dim]` share a class:
  `sum_k alpha_k |a_ik - b_jk| + bias`, with `params = {'alpha': [dim], 'bias': []}` (Koch et al., 2015)."""
  return jnp.abs(a[:, None, :] - b[None, :, :]) @ params['alpha'] + params['bias']


def siamese_net(embed_fn: EmbedFn, ways: int, embed_dim: int, *, balanced: bool = True,
                transductive: bool = True) -> MetaLearner:
  """Siamese Networks (Koch, Zemel and Salakhutdinov, 2015, ICML Deep Learning Workshop).

  Verification: every (query, support) pair of a task is a training pair, labelled 1 when they share a class;
  p(same) = sigmoid(sum_k alpha_k |h_q,k - h_s,k| + bias); the loss is the binary cross-entropy. All pairs are used,
  so the task fixes the pairs and everything stays deterministic; with `balanced`, same-class and different-class
  pairs each carry half the loss (Koch et al. trained on balanced pairs), else every pair counts equally.
  Classification is one-shot by the most similar support example: `predict` gives each class the largest pair logit
  over that class's support examples.

  Args:
    embed_fn: `embed_fn(params, x) -> [examples, embed_dim]` for `x: [examples, *input_shape]`.
    ways: number of classes; labels are integers in `0..ways-1`.
    embed_dim: size of the embeddings, to build the weighted L1 layer.
    balanced: weigh same-class and different-class pairs equally in the loss.
    transductive: if False, queries are embedded as `embed_fn(params, x, reference=support.x)`.

  Returns:
    A `MetaLearner` over `params = {'embed': model_params, 'alpha': [embed_dim], 'bias': []}`, initialised as in the
    paper (N(0, 0.2^2) weights, N(0.5, 0.01^2) bias). `adapt(params, support) -> SupportEmbeddings`;
    `predict(state, x) -> [examples, ways]` scores (the logit of the most similar support example per class; a class
    without support examples gets the lowest float); `loss(params, task) -> (loss, {'loss', 'accuracy',
    'pair_accuracy'})`, where 'accuracy' is one-shot classification of the queries.
  """
  ways = check_ways(ways, 'siamese_net')
  if int(embed_dim) < 1:
    raise ValueError(f'siamese_net: embed_dim must be a positive int; got {embed_dim!r}')
  dim = int(embed_dim)

  def init(key: jax.Array, model_params: Params) -> Params:
    k_alpha, k_bias = jax.random.split(key)
    return {'embed': model_params, 'alpha': 0.2 * jax.random.normal(k_alpha, (dim,)),
            'bias': 0.5 + 0.01 * jax.random.normal(k_bias, ())}

  def adapt(params: Params, support: Split) -> SupportEmbeddings:
    check_support(support, ways, 'siamese_net')
    n = jnp.shape(support.y)[0]
    z = check_embeddings(embed_fn(params['embed'], support.x), n, 'siamese_net (support)', dim)
    labels = jax.nn.one_hot(support.y, ways, dtype=z.dtype)
    return SupportEmbeddings(params, z, labels, None if transductive else support.x)

  def similarities(state: SupportEmbeddings, x: jax.Array) -> jax.Array:
    z = embed(embed_fn, state.params['embed'], x, state.reference)
    z = check_embeddings(z, jnp.shape(x)[0], 'siamese_net (query)', dim)
    return pair_logits(state.params, z, state.support)

  def scores(state: SupportEmbeddings, logits: jax.Array) -> jax.Array:
    lowest = jnp.finfo(logits.dtype).min
    member = state.labels.T[None, :, :] > 0
    return jnp.max(jnp.where(member, logits[:, None, :], lowest), axis=-1)

  def predict(state: SupportEmbeddings, x: jax.Array) -> jax.Array:
    return scores(state, similarities(state, x))

  def loss(params: Params, task: Task) -> tuple[jax.Array, dict[str, jax.Array]]:
    check_classification_task(task, ways, 'siamese_net')
    state = adapt(params, task.support)
    logits = similarities(state, task.query.x)
    same = (task.query.y[:, None] == task.support.y[None, :]).astype(logits.dtype)
    per_pair = optax.sigmoid_binary_cross_entropy(logits, same)
    if balanced:
      n_same, n_diff = jnp.sum(same), jnp.sum(1 - same)
      mean_same = jnp.sum(per_pair * same) / jnp.maximum(n_same, 1)
      mean_diff = jnp.sum(per_pair * (1 - same)) / jnp.maximum(n_diff, 1)
      has_same, has_diff = (n_same > 0).astype(logits.dtype), (n_diff > 0).astype(logits.dtype)
      value = (has_same * mean_same + has_diff * mean_diff) / (has_same + has_diff)
    else:
      value = jnp.mean(per_pair)
    metrics = {'loss': value, 'accuracy': losses.accuracy(scores(state, logits), task.query.y),
               'pair_accuracy': jnp.mean((logits > 0) == (same > 0))}
    return value, metrics

  return MetaLearner(init, adapt, predict, loss, jax.grad(loss, has_aux=True))


register_algorithm(Algorithm(
    name='siamese', family='metric-based', title='siamese networks',
    paper='Koch, Zemel & Salakhutdinov, 2015, ICML Deep Learning Workshop', options=(),
    published={'omniglot': OMNIGLOT_EPISODES},
    build=embedding_recipe('embedding', lambda c, embed_fn, ways, shape: siamese_net(embed_fn, ways, shape[-1])),
    results=(
        Published('omniglot', {'ways': 5, 'shots': 1}, 'accuracy %', 96.7, 'Vinyals et al. (2016), table 1'),
        Published('omniglot', {'ways': 5, 'shots': 5}, 'accuracy %', 98.4, 'Vinyals et al. (2016), table 1'),
    )))
