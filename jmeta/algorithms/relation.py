"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr and Hospedales, 2018, arXiv:1711.06025)."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmeta import losses
from jmeta import nn as jnn
from jmeta.algorithms._metric_based import (OMNIGLOT_EPISODES, EmbedFn, check_classification_task, check_support,
                                            check_ways, embed, embedding_recipe)
from jmeta.base import MetaLearner, Params
from jmeta.experiments import Algorithm, Published, register_algorithm
from jmeta.models.conv4 import ConvBlock, functional
from jmeta.tasks import Split, Task


class RelationModule(nn.Module):
  """The relation module g: two conv blocks (3x3 conv, BatchNorm, ReLU, 2x2 max-pool), a ReLU FC layer and a
  sigmoid FC output. `[pairs, H, W, 2 * C] -> [pairs]` relation scores in (0, 1).

  Defaults are the paper's (64 filters, FC sizes 8 and 1) with the authors' Omniglot padding ('SAME'); BatchNorm
  uses batch statistics, as `jmeta.models.conv4` describes.
  """
  filters: int = 64
  hidden: int = 8
  padding: str | Sequence[str] = 'SAME'
  conv: type = jnn.Conv

  @nn.compact
  def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
    """`x: [pairs, H, W, 2 * C]`; `mask: [pairs]` selects the pairs BatchNorm takes statistics from."""
    paddings = (self.padding,) * 2 if isinstance(self.padding, str) else tuple(self.padding)
    for i, padding in enumerate(paddings):
      x = ConvBlock(self.filters, 1, padding, True, self.conv, name=f'block{i}')(x, mask=mask)
    x = jnp.reshape(x, (x.shape[0], -1))
    x = nn.relu(nn.Dense(self.hidden, name='fc1')(x))
    return nn.sigmoid(nn.Dense(1, name='fc2')(x))[:, 0]


class RelationState(NamedTuple):
  """What `adapt` returns.

  Attributes:
    params: the meta-parameters, to embed queries and score pairs.
    classes: `[ways, H, W, C]`, the support feature maps summed per class.
    reference: the support inputs when queries are embedded non-transductively, else None.
    reference_pairs: `[support * ways, H, W, 2 * C]`, each support feature map paired with each class, whose
      statistics the relation module then uses; None when transductive.
  """
  params: Params
  classes: jax.Array
  reference: jax.Array | None
  reference_pairs: jax.Array | None


def _pairs(features: jax.Array, classes: jax.Array) -> jax.Array:
  """Each of `features: [n, H, W, C]` concatenated along channels with each of `classes: [ways, H, W, C]`;
  `[n * ways, H, W, 2 * C]`, the class index fastest."""
  n, ways = features.shape[0], classes.shape[0]
  f = jnp.broadcast_to(features[:, None], (n, ways) + features.shape[1:])
  c = jnp.broadcast_to(classes[None], (n, ways) + classes.shape[1:])
  return jnp.reshape(jnp.concatenate([f, c], axis=-1), (n * ways,) + features.shape[1:-1] + (2 * features.shape[-1],))


def relation_net(embed_fn: EmbedFn, ways: int, feature_shape: Sequence[int], *,
                 relation_module: nn.Module | None = None, transductive: bool = True) -> MetaLearner:
  """Relation Networks (Sung, Yang, Zhang, Xiang, Torr and Hospedales, 2018, arXiv:1711.06025).

  Support feature maps are summed per class; each query's feature map is concatenated along channels with each
  class's; the relation module scores each pair in (0, 1); the loss is the mean squared error against the one-hot
  query labels.

  Args:
    embed_fn: `embed_fn(params, x) -> [examples, H, W, C]` feature maps (e.g. `conv4_relation`, not flattened).
    ways: number of classes; labels are integers in `0..ways-1`.
    feature_shape: `(H, W, C)` of one embedding, to build the relation module (`(5, 5, 64)` for
      `conv4_relation()` on 28x28).
    relation_module: a Flax module `[pairs, H, W, 2 * C] -> [pairs]` whose `__call__(x, *, mask=None)` takes a
      BatchNorm mask as `RelationModule` does (needed only with `transductive=False`); `RelationModule()` if None.
    transductive: if False, queries are embedded as `embed_fn(params, x, reference=support.x)` and the relation
      module's batch statistics come from the support-class pairs, so a query's scores do not depend on the other
      queries.

  Returns:
    A `MetaLearner` over `params = {'embed': model_params, 'relation': relation_params}`.
    `adapt(params, support) -> RelationState`; `predict(state, x) -> [examples, ways]` relation scores in (0, 1)
    (not logits); `loss(params, task) -> (loss, {'loss', 'accuracy'})`.
  """
  ways = check_ways(ways, 'relation_net')
  feature_shape = tuple(int(d) for d in feature_shape)
  if len(feature_shape) != 3:
    raise ValueError(f'relation_net: feature_shape must be (H, W, C); got {feature_shape}')
  relation = functional(RelationModule() if relation_module is None else relation_module)

  def features(z: jax.Array, n: int, where: str) -> jax.Array:
    if jnp.ndim(z) != 4 or jnp.shape(z)[0] != n or tuple(jnp.shape(z)[1:]) != feature_shape:
      want = ', '.join(map(str, (n,) + feature_shape))
      raise ValueError(f'relation_net ({where}): embed_fn must return feature maps [{want}] (feature_shape) for {n} '
                       f'examples; got shape {jnp.shape(z)}')
    return z

  def init(key: jax.Array, model_params: Params) -> Params:
    h, w, c = feature_shape
    return {'embed': model_params, 'relation': relation.init(key, jnp.zeros((2, h, w, 2 * c)))}

  def adapt(params: Params, support: Split) -> RelationState:
    check_support(support, ways, 'relation_net')
    n = jnp.shape(support.y)[0]
    z = features(embed_fn(params['embed'], support.x), n, 'support')
    one_hot = jax.nn.one_hot(support.y, ways, dtype=z.dtype)
    classes = jnp.einsum('nk,nhwc->khwc', one_hot, z)
    if transductive:
      return RelationState(params, classes, None, None)
    return RelationState(params, classes, support.x, _pairs(z, classes))

  def predict(state: RelationState, x: jax.Array) -> jax.Array:
    n = jnp.shape(x)[0]
    z = features(embed(embed_fn, state.params['embed'], x, state.reference), n, 'query')
    pairs = _pairs(z, state.classes)
    if state.reference_pairs is None:
      scores = relation.apply(state.params['relation'], pairs)
    else:
      scores = relation.apply(state.params['relation'], pairs, reference=state.reference_pairs)
    if jnp.shape(scores) not in ((n * ways,), (n * ways, 1)):
      raise ValueError(f'relation_net: the relation module must return one score per pair, [{n * ways}]; '
                       f'got shape {jnp.shape(scores)}')
    return jnp.reshape(scores, (n, ways))

  def loss(params: Params, task: Task) -> tuple[jax.Array, dict[str, jax.Array]]:
    check_classification_task(task, ways, 'relation_net')
    scores = predict(adapt(params, task.support), task.query.x)
    value = losses.mse(scores, jax.nn.one_hot(task.query.y, ways, dtype=scores.dtype))
    return value, {'loss': value, 'accuracy': losses.accuracy(scores, task.query.y)}

  return MetaLearner(init, adapt, predict, loss, jax.grad(loss, has_aux=True))


register_algorithm(Algorithm(
    name='relation', family='metric-based', title='relation networks',
    paper='Sung, Yang, Zhang, Xiang, Torr & Hospedales, 2018, arXiv:1711.06025', options=(),
    # Sung et al.'s code: Adam 1e-3 halved every 100,000 episodes (StepLR), 19 queries per class at 1 shot.
    published={'omniglot': {**OMNIGLOT_EPISODES, 'outer_halve_every': 100_000,
                            'queries': lambda f: 19 if f['shots'] == 1 else 15}},
    build=embedding_recipe('feature_map', lambda c, embed_fn, ways, shape: relation_net(embed_fn, ways, shape)),
    results=(
        Published('omniglot', {'ways': 5, 'shots': 1}, 'accuracy %', 99.6, 'Sung et al. (2018), table 1'),
        Published('omniglot', {'ways': 5, 'shots': 5}, 'accuracy %', 99.8, 'Sung et al. (2018), table 1'),
    )))
