"""A resolved config built into the pure parts of a run: learner, outer optimizer, model, task samplers, score."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import optax

from jmeta.base import MetaLearner, Params
from jmeta.experiments.config import Config, resolve
from jmeta.experiments.registry import Algorithm, Dataset, get_algorithm, get_dataset
from jmeta.tasks import Task


class Experiment(NamedTuple):
  """The pure parts of a run, built from a resolved `Config`.

  `learner` meta-trains on `train_tasks`; `test_learner` (the same meta-parameters, built for the test ways) is
  scored with `score` on `valid_tasks` and `test_tasks`. `metric` names the score: 'mse' or 'accuracy'.
  `algorithm` and `dataset` are the registry entries the run was built from; `breakdown`, if any, is the dataset's
  per-episode details (`breakdown_names`) reported beside the score.
  """
  config: Config
  learner: MetaLearner
  test_learner: MetaLearner
  outer_opt: optax.GradientTransformation
  init_model: Callable[[jax.Array], Params]
  train_tasks: Callable[[jax.Array], Task]
  valid_tasks: Callable[[jax.Array], Task]
  test_tasks: Callable[[jax.Array], Task]
  score: Callable[[jax.Array, jax.Array], jax.Array]
  metric: str
  algorithm: Algorithm
  dataset: Dataset
  breakdown: Callable[[jax.Array, jax.Array], jax.Array] | None = None
  breakdown_names: tuple[str, ...] = ()

  @property
  def inner_steps(self) -> bool:
    """Whether the learner adapts by inner steps, whose number at test time `adapt(..., steps=)` takes."""
    return 'eval_inner_steps' in self.config


def optimizer(name: str, lr: float | optax.Schedule) -> optax.GradientTransformation:
  """'sgd', 'adam', 'adam0' (Adam with beta1 = 0) or 'rmsprop' (decay 0.95, momentum 0.9) at step size `lr`."""
  # eps_root > 0 keeps Adam's second-order gradient finite where an inner gradient is exactly zero.
  if name == 'sgd':
    return optax.sgd(lr)
  if name == 'rmsprop':  # Santoro et al. (2016): RMSProp with decay 0.95 and momentum 0.9.
    return optax.rmsprop(lr, decay=0.95, momentum=0.9)
  return optax.adam(lr, b1=0.0 if name == 'adam0' else 0.9, eps_root=1e-8)


def outer_schedule(c: Config) -> float | optax.Schedule:
  """The outer step size of a resolved config: constant, annealed linearly to 0, or halved periodically."""
  if c.outer_decay:
    return optax.linear_schedule(c.outer_lr, 0.0, c.steps)
  if c.outer_halve_every:
    return optax.exponential_decay(c.outer_lr, c.outer_halve_every, 0.5, staircase=True)
  return c.outer_lr


def build(config: Config, data_dir: str | None = None) -> Experiment:
  """The learner, optimizers, model and task samplers of `config` (resolved first).

  `data_dir` is where the dataset's files are (e.g. Omniglot's zips), else `$JMETA_DATA_DIR`, else the user cache.
  """
  c = resolve(config)
  algorithm, dataset = get_algorithm(c.algo), get_dataset(c.dataset)
  data = dataset.load(c, data_dir)
  recipe = algorithm.build(c, data)
  return Experiment(c, recipe.learner, recipe.test_learner, optimizer(c.outer_opt, outer_schedule(c)),
                    recipe.init_model, data.train_tasks, data.valid_tasks, data.test_tasks, data.score, data.metric,
                    algorithm, dataset, data.breakdown, data.breakdown_names)


def keys(seed: int) -> dict[str, jax.Array]:
  """The independent PRNG streams of a run: model init, training state, validation tasks."""
  root = jax.random.PRNGKey(seed)
  return dict(zip(('model', 'train', 'valid'), jax.random.split(root, 3)))


def test_key(seed: int) -> jax.Array:
  """The key of the meta-test episodes for `seed`, independent of every training stream."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), 2**31 - 1)


def initial_state(experiment: Experiment, *, abstract: bool = False):
  """The run's initial `TrainState` from `keys(seed)`; with `abstract`, only its shapes and dtypes
  (`jax.eval_shape`: nothing compiles), e.g. to restore a checkpoint into."""
  from jmeta.training import init_state
  streams = keys(experiment.config.seed)

  def init(k_train: jax.Array, k_model: jax.Array):
    return init_state(experiment.learner, experiment.outer_opt, k_train, experiment.init_model(k_model))

  if abstract:
    return jax.eval_shape(init, streams['train'], streams['model'])
  return jax.jit(init)(streams['train'], streams['model'])
