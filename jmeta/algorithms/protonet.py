"""Prototypical Networks (Snell, Swersky and Zemel, 2017, arXiv:1703.05175)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jmeta.algorithms._metric_based import (OMNIGLOT_EPISODES, EmbedFn, check_embeddings, check_support, check_ways,
                                            embed, embedding_recipe, query_cross_entropy)
from jmeta.base import MetaLearner, Params
from jmeta.experiments import Algorithm, Published, register_algorithm
from jmeta.tasks import Split

def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """Squared Euclidean distances `[n, m]` between rows of `a: [n, dim]` and `b: [m, dim]`."""
  return jnp.sum(jnp.square(a[:, None, :] - b[None, :, :]), axis=-1)


def class_means(z: jax.Array, labels: jax.Array, ways: int) -> jax.Array:
  """Mean of the rows of `z: [examples, dim]` per class of integer `labels: [examples]`; `[ways, dim]`.

  A class without examples gets the zero vector.
  """
  one_hot = jax.nn.one_hot(labels, ways, dtype=z.dtype)
  counts = jnp.sum(one_hot, axis=0)
  return (one_hot.T @ z) / jnp.maximum(counts, 1)[:, None]


class ProtoNetState(NamedTuple):
  """What `adapt` returns.

  Attributes:
    params: the meta-parameters, to embed queries.
    prototypes: `[ways, dim]`, the class means of the support embeddings.
    reference: the support inputs when queries are embedded non-transductively, else None.
  """
  params: Params
  prototypes: jax.Array
  reference: jax.Array | None


def protonet(embed_fn: EmbedFn, ways: int, *, transductive: bool = True) -> MetaLearner:
  """Prototypical Networks (Snell, Swersky and Zemel, 2017, arXiv:1703.05175).

  Each class's prototype is the mean support embedding; a query's logits are its negative squared Euclidean
  distances to the prototypes; the loss is the query cross-entropy.

  Args:
    embed_fn: `embed_fn(params, x) -> [examples, dim]` for `x: [examples, *input_shape]`.
    ways: number of classes; labels are integers in `0..ways-1`.
    transductive: if False, queries are embedded as `embed_fn(params, x, reference=support.x)` so that batch
      statistics come from the support set and a query's embedding does not depend on the other queries.

  Returns:
    A `MetaLearner` over `params = {'embed': model_params}`. `adapt(params, support) -> ProtoNetState`;
    `predict(state, x) -> [examples, ways]` logits; `loss(params, task) -> (loss, {'loss', 'accuracy'})`.
  """
  ways = check_ways(ways, 'protonet')

  def init(key: jax.Array, model_params: Params) -> Params:
    del key
    return {'embed': model_params}

  def adapt(params: Params, support: Split) -> ProtoNetState:
    check_support(support, ways, 'protonet')
    n = jnp.shape(support.y)[0]
    z = check_embeddings(embed_fn(params['embed'], support.x), n, 'protonet (support)')
    return ProtoNetState(params, class_means(z, support.y, ways), None if transductive else support.x)

  def predict(state: ProtoNetState, x: jax.Array) -> jax.Array:
    z = embed(embed_fn, state.params['embed'], x, state.reference)
    z = check_embeddings(z, jnp.shape(x)[0], 'protonet (query)', jnp.shape(state.prototypes)[1])
    return -squared_distances(z, state.prototypes)

  loss = query_cross_entropy(adapt, predict, ways, 'protonet')
  return MetaLearner(init, adapt, predict, loss, jax.grad(loss, has_aux=True))


register_algorithm(Algorithm(
    name='protonet', family='metric-based', title='prototypical networks',
    paper='Snell, Swersky & Zemel, 2017, arXiv:1703.05175', options=(),
    # Snell et al. (2017): 60-way episodes with 5 queries per class for training; Adam 1e-3 halved every 2,000
    # episodes.
    published={'omniglot': {**OMNIGLOT_EPISODES, 'train_ways': 60, 'queries': 5, 'outer_halve_every': 2000},
               # Snell et al. (2017), section 3.3, mini-ImageNet: 30-way 1-shot or 20-way 5-shot training episodes, 15
               # queries, 64 filters; steps are Omniglot's (they stopped on validation loss). Reused on the others.
               **{d: {**OMNIGLOT_EPISODES, 'train_ways': lambda f: 30 if f['shots'] == 1 else 20, 'queries': 15,
                      'filters': 64, 'outer_halve_every': 2000}
                  for d in ('mini-imagenet', 'tiered-imagenet', 'cifar-fs', 'fc100')}},
    build=embedding_recipe('embedding', lambda c, embed_fn, ways, shape: protonet(embed_fn, ways)),
    results=(Published('omniglot', {'ways': 5, 'shots': 1}, 'accuracy %', 98.8, 'Snell et al. (2017), table 1'),
             Published('omniglot', {'ways': 5, 'shots': 5}, 'accuracy %', 99.7, 'Snell et al. (2017), table 1'))))
