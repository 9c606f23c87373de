"""MetaGAN (Zhang, Zhao, Yuan, Song & Sun, NeurIPS 2018): a task-conditioned generator of fake examples and a
few-shot classifier that also tells real examples from fake ones, trained adversarially, around any jmeta
classifier learner.

The classifier gets an extra "fake" class without a new output of the base model: as in Salimans et al.'s
semi-supervised GAN (2016, arXiv:1606.03498), the fake class has a logit `b` that does not depend on the input
(there it is 0; here a learned scalar, since metric learners' logits, such as ProtoNets' negative squared
distances, have no fixed scale), so for the base learner's logits `l(x): [ways]`

    P(real | x) = D(x) = Z / (Z + e^b),   Z = sum_k exp(l_k(x)),   i.e.  log D = -softplus(b - lse(l)),
                                                                          log (1 - D) = -softplus(lse(l) - b).

`calibrated_fake_logit` starts `b` at the mean `lse(l)` of real queries, where `D = 1/2`.

Per task, the base learner adapts on the support set (its own `adapt`: an inner loop, prototypes, ...), and:

- the classifier (discriminator) minimises the base learner's own loss on the query set plus
  `gan_weight * [mean_real softplus(-lse(l(x))) + mean_fake softplus(lse(l(G(z))))]`, which together are the
  (ways + 1)-class cross-entropy of real queries under their labels and of fakes under the fake class, when the
  base loss is the query cross-entropy;
- the generator minimises `mean_fake softplus(-lse(l(G(z))))` (the non-saturating loss), through the classifier
  adapted to the same task.

`meta_grad` returns both players' gradients in one `MetaGANParams`, so one optax transformation updates both
(simultaneous gradient descent); the base learner's file does not change. One difference from the paper's MAML
variant: the base learner adapts on the real support set only (the paper also puts fakes, under the fake class,
into MAML's inner loop, which needs an inner loss that knows the fake class).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmeta.algorithms import maml as _maml, protonet as _protonet, relation as _relation
from jmeta.algorithms.neural_process import data_key
from jmeta.base import Metrics, MetaLearner, Params
from jmeta.experiments import Algorithm, Option, Published, Recipe, get_algorithm, register_algorithm
from jmeta.tasks import Split, Task


class MetaGANParams(NamedTuple):
  """Both players' parameters.

  Attributes:
    learner: the base learner's meta-parameters (the classifier, which is also the discriminator).
    generator: the generator's parameters.
    fake_logit: `[]`, the fake class's logit `b`, the classifier's.
  """
  learner: Params
  generator: Params
  fake_logit: jax.Array


GenerateFn = Callable[[Params, jax.Array, jax.Array, int], jax.Array]
"""`generate(params, key, support_x, count) -> [count, *input_shape]` fake examples for the task of `support_x`."""


class TaskGenerator(nn.Module):
  """Fakes conditioned on a task: `(support_x [n, *shape], noise [m, noise_dim]) -> [m, *shape]` in (0, 1).

  The task code is the mean over the support set of an MLP embedding of each example (a permutation-invariant
  summary, as the paper's generator conditions on the task's support set); each fake decodes its noise vector
  concatenated with that code through an MLP with a sigmoid output, the range of jmeta's image datasets.

  Attributes:
    shape: one example's shape, e.g. `(28, 28, 1)`.
    hidden: width of the hidden layers.
    code: size of the task code.
  """
  shape: tuple[int, ...]
  hidden: int = 256
  code: int = 64

  @nn.compact
  def __call__(self, support_x: jax.Array, noise: jax.Array) -> jax.Array:
    if support_x.shape[1:] != tuple(self.shape):
      raise ValueError(f'TaskGenerator: support examples have shape {support_x.shape[1:]}, expected {self.shape}')
    h = jnp.reshape(support_x, (support_x.shape[0], -1))
    h = nn.Dense(self.code, name='encode_out')(nn.relu(nn.Dense(self.hidden, name='encode')(h)))
    task = jnp.broadcast_to(jnp.mean(h, axis=0), (noise.shape[0], self.code))
    x = jnp.concatenate([noise, task], axis=-1)
    x = nn.relu(nn.Dense(self.hidden, name='decode1')(x))
    x = nn.relu(nn.Dense(self.hidden, name='decode2')(x))
    x = nn.sigmoid(nn.Dense(math.prod(self.shape), name='decode_out')(x))
    return jnp.reshape(x, (noise.shape[0],) + tuple(self.shape))


class Generator(NamedTuple):
  """A generator as pure functions: `init(key, example_x) -> params`, `generate` (a `GenerateFn`)."""
  init: Callable[[jax.Array, jax.Array], Params]
  generate: GenerateFn


def task_generator(shape: tuple[int, ...], *, hidden: int = 256, code: int = 64, noise_dim: int = 32) -> Generator:
  """A `TaskGenerator` for examples of `shape`, drawing `noise_dim` standard normal inputs per fake."""
  module = TaskGenerator(tuple(shape), hidden, code)

  def init(key: jax.Array, example_x: jax.Array) -> Params:
    return module.init(key, example_x, jnp.zeros((1, noise_dim), example_x.dtype))['params']

  def generate(params: Params, key: jax.Array, support_x: jax.Array, count: int) -> jax.Array:
    noise = jax.random.normal(key, (count, noise_dim), support_x.dtype)
    return module.apply({'params': params}, support_x, noise)

  return Generator(init, generate)


def real_log_probs(logits: jax.Array, fake_logit: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`(log D(x), log (1 - D(x)))` per example for class logits `[examples, ways]` and the fake class's logit."""
  lse = jax.nn.logsumexp(logits, axis=-1)
  return -jax.nn.softplus(fake_logit - lse), -jax.nn.softplus(lse - fake_logit)


def calibrated_fake_logit(learner: MetaLearner, params: Params, task: Task,
                          logits_fn: Callable[[jax.Array], jax.Array] = lambda predictions: predictions) -> jax.Array:
  """The mean `lse` of the class logits of `task`'s queries after `learner` (the base learner) adapts with
  `params`: a fake logit at which real queries are judged real with probability about 1/2."""
  logits = logits_fn(learner.predict(learner.adapt(params, task.support), task.query.x))
  return jax.lax.stop_gradient(jnp.mean(jax.nn.logsumexp(logits, axis=-1)))


def metagan(base: MetaLearner, generate: GenerateFn, *, fakes: int, gan_weight: float = 1.0,
            logits_fn: Callable[[jax.Array], jax.Array] = lambda predictions: predictions) -> MetaLearner:
  """MetaGAN around `base`, a classifier meta-learner whose `predict` gives `[examples, ways]` class scores.

  Args:
    base: the learner; its `loss` is the supervised part of the classifier's loss.
    generate: the generator (`task_generator(...).generate` or any `GenerateFn`).
    fakes: generated examples per task.
    gan_weight: weight of the real/fake terms in the classifier's loss.
    logits_fn: reads `base.predict`'s scores as class logits (e.g. the logit of relation networks' sigmoid scores).

  Returns:
    A `MetaLearner` over `MetaGANParams`. `init(key, MetaGANParams(model_params, generator_params, b))`;
    `adapt` and `predict` are the base learner's (the classifier alone, on real examples);
    `loss(params, task, *, key=None) -> (classifier loss, metrics)`; `meta_grad(params, task, *, key=None)` gives
    the classifier's gradient of its loss and the generator's gradient of its own. Without `key`, the generator's
    noise comes from `data_key` of the task, so both stay pure functions of `(params, task)`.
  """
  if not isinstance(fakes, int) or isinstance(fakes, bool) or fakes < 1:
    raise ValueError(f'metagan: fakes must be a positive int; got {fakes!r}')
  if not gan_weight >= 0:
    raise ValueError(f'metagan: gan_weight must be >= 0; got {gan_weight!r}')

  def init(key: jax.Array, model_params: MetaGANParams) -> MetaGANParams:
    if not isinstance(model_params, MetaGANParams):
      raise ValueError('metagan: init takes MetaGANParams(model_params, generator_params, fake_logit); got '
                       f'{type(model_params).__name__}')
    return model_params._replace(learner=base.init(key, model_params.learner))

  def adapt(params: MetaGANParams, support: Split, **kwargs):
    return base.adapt(params.learner, support, **kwargs)

  def adversarial_terms(params: MetaGANParams, task: Task, key: jax.Array) -> tuple[jax.Array, jax.Array, Metrics]:
    """The classifier's real/fake loss, the generator's loss, and metrics."""
    fake_x = generate(params.generator, key, task.support.x, fakes)
    adapted = base.adapt(params.learner, task.support)
    log_d_real, _ = real_log_probs(logits_fn(base.predict(adapted, task.query.x)), params.fake_logit)
    log_d_fake, log_not_d_fake = real_log_probs(logits_fn(base.predict(adapted, fake_x)), params.fake_logit)
    discriminator = -jnp.mean(log_d_real) - jnp.mean(log_not_d_fake)
    generator_loss = -jnp.mean(log_d_fake)
    return discriminator, generator_loss, {'real_prob_of_real': jnp.mean(jnp.exp(log_d_real)),
                                           'real_prob_of_fake': jnp.mean(jnp.exp(log_d_fake))}

  def loss(params: MetaGANParams, task: Task, *, key: jax.Array | None = None) -> tuple[jax.Array, Metrics]:
    key = data_key(task.support, task.query) if key is None else key
    supervised, metrics = base.loss(params.learner, task)
    discriminator, generator_loss, gan_metrics = adversarial_terms(params, task, key)
    total = supervised + gan_weight * discriminator
    return total, {**metrics, 'loss': total, 'supervised_loss': supervised, 'discriminator_loss': discriminator,
                   'generator_loss': generator_loss, **gan_metrics}

  def meta_grad(params: MetaGANParams, task: Task, *, key: jax.Array | None = None
                ) -> tuple[MetaGANParams, Metrics]:
    key = data_key(task.support, task.query) if key is None else key
    # Each player differentiates its own loss with respect to its own parameters only.
    fixed = jax.lax.stop_gradient(params)
    (classifier, fake_logit), metrics = jax.grad(
        lambda p, b: loss(MetaGANParams(p, fixed.generator, b), task, key=key), argnums=(0, 1),
        has_aux=True)(params.learner, params.fake_logit)
    generator = jax.grad(lambda g: adversarial_terms(fixed._replace(generator=g), task, key)[1])(params.generator)
    return MetaGANParams(classifier, generator, fake_logit), metrics

  return MetaLearner(init, adapt, base.predict, loss, meta_grad)


def _relation_logits(scores: jax.Array) -> jax.Array:
  """Relation networks' per-class sigmoid scores read as logits (the sigmoid's inverse, kept finite)."""
  scores = jnp.clip(scores, 1e-6, 1 - 1e-6)
  return jnp.log(scores) - jnp.log1p(-scores)


OPTIONS = (
    Option('fakes', 'generated examples per task (default: as many as the query set)'),
    Option('gan_weight', "weight of the real/fake terms in the classifier's loss", float, default=1.0),
    Option('generator_hidden', "width of the generator's hidden layers", default=256),
    Option('noise_dim', "size of the generator's noise input", default=32),
)
BASES = {'protonet': (lambda s: s), 'maml': (lambda s: s), 'relation': _relation_logits}
_BASE_MODULES = (_protonet, _maml, _relation)  # imported above, so their algorithms are registered before ours


def _register(base_name: str) -> None:
  base = get_algorithm(base_name, load_builtin=False)  # registered above it in jmeta.algorithms
  logits_fn = BASES[base_name]

  def build(c, data) -> Recipe:
    recipe = base.build(c, data)
    gen = task_generator(tuple(data.example_x.shape[1:]), hidden=c.generator_hidden, noise_dim=c.noise_dim)

    def init_model(key: jax.Array) -> MetaGANParams:
      learner_key, generator_key, task_key = jax.random.split(key, 3)
      model = recipe.init_model(learner_key)
      # The fake logit from one training task at the initial weights (the learner's init takes no data).
      meta_params = recipe.learner.init(learner_key, model)
      b = calibrated_fake_logit(recipe.learner, meta_params, data.train_tasks(task_key), logits_fn)
      return MetaGANParams(model, gen.init(generator_key, data.example_x), b)

    wrap = lambda learner: metagan(learner, gen.generate, fakes=c.fakes, gan_weight=c.gan_weight,
                                   logits_fn=logits_fn)
    return Recipe(init_model, wrap(recipe.learner), wrap(recipe.test_learner))

  # Zhang et al. (2018) train MetaGAN with each base learner's own settings; the generator's size is ours.
  # Fakes: as many as the query set (computed after the base's own fields, which may be computed too).
  published = {d: {**settings, 'fakes': lambda f: f['train_ways'] * f['queries']}
               for d, settings in base.published.items() if d == 'omniglot'}
  results = ()
  if base_name == 'relation':  # Zhang et al. (2018), table 1: Relation Networks + MetaGAN on Omniglot, 5 ways.
    results = (Published('omniglot', {'ways': 5, 'shots': 1}, 'accuracy %', 99.67, 'Zhang et al. (2018), table 1'),
               Published('omniglot', {'ways': 5, 'shots': 5}, 'accuracy %', 99.86, 'Zhang et al. (2018), table 1'))
  register_algorithm(Algorithm(
      name=f'metagan-{base_name}', family='generative', title=f'MetaGAN with {base.title}',
      paper='Zhang, Zhao, Yuan, Song & Sun, NeurIPS 2018', options=base.options + OPTIONS, published=published,
      build=build, check=base.check, fixed_ways=base.fixed_ways, results=results, upgrade=base.upgrade))


for _name in BASES:
  _register(_name)
