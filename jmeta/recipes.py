"""Named experiments: an algorithm and a dataset with their published hyperparameters, built into pure parts."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import optax

from jmeta import losses
from jmeta.base import ApplyFn, MetaLearner, Params
from jmeta.checks import check_learning_rate, check_positive_int
from jmeta.tasks import Task

GRADIENT_BASED = ('maml', 'fomaml', 'metasgd', 'anil', 'reptile', 'pretrained')
METRIC_BASED = ('protonet', 'matching', 'relation', 'siamese')
ALGORITHMS = GRADIENT_BASED + METRIC_BASED
DATASETS = ('sinusoid', 'omniglot')
OPTIMIZERS = ('sgd', 'adam', 'adam0')
SPLITS = ('vinyals', 'lake')


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a run; `None` fields take the published default of the algorithm.

  `inner_steps` adapt each task while meta-training, `eval_inner_steps` at validation and test time.
  `outer_decay` anneals the outer step size linearly to 0 over `steps`; `outer_halve_every` halves it every that
  many meta-steps instead. `attention_scale` multiplies Matching Networks' cosine similarities (learned from that
  value with `learn_attention_scale`). `inner_batch` gives Reptile's inner steps minibatches while meta-training
  (see `jmeta.reptile`). Optimizers: 'sgd', 'adam', and 'adam0', Adam with beta1 = 0 (no momentum).
  """
  algo: str
  dataset: str = 'sinusoid'
  ways: int | None = None
  train_ways: int | None = None
  shots: int | None = None
  queries: int | None = None
  split: str = 'vinyals'
  filters: int = 64
  meta_batch: int | None = None
  steps: int | None = None
  inner_steps: int | None = None
  eval_inner_steps: int | None = None
  inner_lr: float | None = None
  inner_opt: str | None = None
  inner_batch: int | None = None
  outer_lr: float | None = None
  outer_opt: str | None = None
  outer_decay: bool | None = None
  outer_halve_every: int | None = None
  attention_scale: float | None = None
  learn_attention_scale: bool | None = None
  seed: int = 0
  log_every: int = 100
  eval_every: int | None = None
  checkpoint_every: int | None = None
  eval_episodes: int = 1000
  eval_queries: int | None = None
  remat: bool = False

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> 'Config':
    if data.get('algo') == 'matching' and 'attention_scale' not in data:
      data = {**data, 'attention_scale': 1.0, 'learn_attention_scale': False}  # saved before the scale existed
    return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


# Finn et al. (2017), section 5.1: inner SGD 0.01, one inner step, 25 tasks a meta-batch, Adam 1e-3, 70,000 steps.
_MAML_SINUSOID = dict(meta_batch=25, steps=70_000, inner_steps=1, inner_lr=0.01, inner_opt='sgd', outer_lr=1e-3,
                      outer_opt='adam', outer_decay=False)
_PUBLISHED: dict[tuple[str, str], dict[str, Any]] = {
    ('maml', 'sinusoid'): _MAML_SINUSOID,
    ('fomaml', 'sinusoid'): _MAML_SINUSOID,
    ('anil', 'sinusoid'): _MAML_SINUSOID,
    # Li et al. (2017): one inner step with learned step sizes initialised in [0.005, 0.1] (inner_lr unused);
    # the paper gives no sinusoid budget, so it gets MAML's.
    ('metasgd', 'sinusoid'): {**_MAML_SINUSOID, 'inner_lr': None},
    # Nichol et al. (2018), the sine-wave experiment: outer SGD 0.1 annealed linearly to 0, 30,000 iterations.
    # Its inner SGD step of 0.02 (for a tanh net) diverges with this ReLU net (after ~9,000 steps at K = 10), as
    # does 0.01 for 10 steps (~13,000 steps at K = 5); 0.005 for 10 full-batch steps over the task's data trains
    # stably (measured at K = 5 and 20) and adapts best of those tried. MAML's meta-batch of 25.
    ('reptile', 'sinusoid'): dict(meta_batch=25, steps=30_000, inner_steps=10, inner_lr=0.005, inner_opt='sgd',
                                  outer_lr=0.1, outer_opt='sgd', outer_decay=True),
    # Finn et al. (2017): the "pretrained" baseline, fine-tuned at test time with MAML's inner step size.
    ('pretrained', 'sinusoid'): _MAML_SINUSOID,
}
_DATASET_DEFAULTS = {
    # K = 10 as in the MAML paper; 100 query points per test task estimate each task's MSE closely.
    'sinusoid': dict(shots=10, eval_queries=100),
    # 5-way 1-shot; 15 queries per class while training and testing, as the metric-learning papers do.
    'omniglot': dict(ways=5, shots=1, queries=15, eval_queries=15),
}
# Finn et al. (2017), section 5.2, 5-way Omniglot: inner SGD 0.4, one inner step, meta-batch 32, Adam 1e-3 and
# 60,000 meta-steps; their code trains on K query examples per class (the queries default to the shots, see
# `resolve`) and tests after 10 inner steps. ANIL (Raghu et al., 2020) and first-order MAML take the same
# settings; Meta-SGD (Li et al., 2017) too, but its learned step is taken once, as in training.
_MAML_OMNIGLOT = dict(meta_batch=32, steps=60_000, inner_steps=1, eval_inner_steps=10, inner_lr=0.4,
                      inner_opt='sgd', outer_lr=1e-3, outer_opt='adam', outer_decay=False)
# One episode a meta-step, Adam 1e-3, as Snell et al. (2017), Vinyals et al. (2016), Sung et al. (2018) train.
_METRIC_OMNIGLOT = dict(meta_batch=1, steps=20_000, inner_steps=1, inner_lr=None, inner_opt='sgd', outer_lr=1e-3,
                        outer_opt='adam', outer_decay=False)
_PUBLISHED.update({
    ('maml', 'omniglot'): _MAML_OMNIGLOT,
    ('fomaml', 'omniglot'): _MAML_OMNIGLOT,
    ('anil', 'omniglot'): _MAML_OMNIGLOT,
    ('metasgd', 'omniglot'): {**_MAML_OMNIGLOT, 'inner_lr': None, 'eval_inner_steps': 1},
    # Nichol et al. (2018) and their code (run_omniglot.py, --train-shots 10 --inner-batch 10): training tasks
    # of 10 examples per class (the queries default to 10 - shots, see `resolve`), 5 inner steps of Adam 1e-3
    # with beta1 = 0 on minibatches that take one pass over them (10 examples at 5-way), 50 full-support steps
    # at test time; outer SGD 1.0 annealed to 0, 5 tasks a meta-batch, 100,000 meta-steps.
    ('reptile', 'omniglot'): dict(meta_batch=5, steps=100_000, inner_steps=5, eval_inner_steps=50, inner_lr=1e-3,
                                  inner_opt='adam0', outer_lr=1.0, outer_opt='sgd', outer_decay=True),
    ('pretrained', 'omniglot'): _MAML_OMNIGLOT,
    # Snell et al. (2017): 60-way episodes with 5 queries per class for training; Adam 1e-3 halved every 2,000
    # episodes.
    ('protonet', 'omniglot'): {**_METRIC_OMNIGLOT, 'train_ways': 60, 'queries': 5, 'outer_halve_every': 2000},
    # The paper's attention softmax over cosines (scale 1) stalls near 94% at 5-way 1-shot (see `matching_net`);
    # a learned scale from 10 (Oreshkin et al., 2018) trains it.
    ('matching', 'omniglot'): {**_METRIC_OMNIGLOT, 'attention_scale': 10.0, 'learn_attention_scale': True},
    # Sung et al.'s code: Adam 1e-3 halved every 100,000 episodes (StepLR), 19 queries per class at 1 shot.
    ('relation', 'omniglot'): {**_METRIC_OMNIGLOT, 'outer_halve_every': 100_000},
    ('siamese', 'omniglot'): _METRIC_OMNIGLOT,
})


def resolve(config: Config) -> Config:
  """`config` with every default filled in and every field checked; raises `ValueError` naming a bad field."""
  if config.algo not in ALGORITHMS:
    raise ValueError(f'unknown algorithm {config.algo!r}; expected one of {", ".join(ALGORITHMS)}')
  if config.dataset not in DATASETS:
    raise ValueError(f'unknown dataset {config.dataset!r}; expected one of {", ".join(DATASETS)}')
  if (config.algo, config.dataset) not in _PUBLISHED:
    raise ValueError(f'{config.algo} does not run on {config.dataset}')
  published = {**_DATASET_DEFAULTS[config.dataset], **_PUBLISHED[config.algo, config.dataset]}
  filled = {k: (published.get(k) if v is None else v) for k, v in dataclasses.asdict(config).items()}
  if config.dataset == 'omniglot' and config.algo in GRADIENT_BASED and config.queries is None:
    filled['queries'] = max(10 - filled['shots'], 1) if config.algo == 'reptile' else filled['shots']
  if config.algo == 'relation' and config.dataset == 'omniglot' and config.queries is None and filled['shots'] == 1:
    filled['queries'] = 19
  if filled['eval_inner_steps'] is None:  # 0 (score without adapting) is a valid choice
    filled['eval_inner_steps'] = filled['inner_steps']
  c = Config(**filled)
  steps = check_positive_int(c.steps, 'steps')
  check_positive_int(c.shots, 'shots')
  if c.queries is not None:
    check_positive_int(c.queries, 'queries')
  check_positive_int(c.filters, 'filters')
  if c.split not in SPLITS:
    raise ValueError(f'unknown split {c.split!r}; expected one of {", ".join(SPLITS)}')
  if c.dataset == 'omniglot':
    check_positive_int(c.ways, 'ways', minimum=2)
    c = dataclasses.replace(c, train_ways=check_positive_int(c.train_ways or c.ways, 'train_ways', minimum=2))
    if c.algo in GRADIENT_BASED and c.train_ways != c.ways:
      raise ValueError(f'{c.algo} trains a {c.ways}-way classifier head; --train-ways {c.train_ways} must equal '
                       f'--ways {c.ways}')
  elif c.ways is not None or c.train_ways is not None:
    raise ValueError(f'ways and train_ways apply to classification; {c.dataset} is a regression dataset')
  check_positive_int(c.meta_batch, 'meta_batch')
  check_positive_int(c.inner_steps, 'inner_steps')
  check_positive_int(c.eval_inner_steps, 'eval_inner_steps', minimum=0)
  if c.outer_halve_every is not None:
    check_positive_int(c.outer_halve_every, 'outer_halve_every')
    if c.outer_decay:
      raise ValueError('outer_decay (linear annealing) and outer_halve_every are two schedules; choose one')
  if c.algo == 'reptile' and c.dataset == 'omniglot' and c.inner_batch is None:
    per_task = c.train_ways * (c.shots + c.queries)
    c = dataclasses.replace(c, inner_batch=-(-per_task // c.inner_steps))
  if c.inner_batch is not None:
    if c.algo != 'reptile':
      raise ValueError(f'inner_batch applies to reptile, not {c.algo}')
    check_positive_int(c.inner_batch, 'inner_batch')
  if c.algo != 'matching' and (c.attention_scale is not None or c.learn_attention_scale is not None):
    raise ValueError(f'attention_scale and learn_attention_scale apply to matching networks, not {c.algo}')
  if c.algo == 'matching':
    c = dataclasses.replace(c, attention_scale=1.0 if c.attention_scale is None else c.attention_scale,
                            learn_attention_scale=bool(c.learn_attention_scale))
    if not c.attention_scale > 0:
      raise ValueError(f'attention_scale must be positive; got {c.attention_scale!r}')
  check_positive_int(c.log_every, 'log_every')
  check_positive_int(c.eval_episodes, 'eval_episodes')
  check_positive_int(c.eval_queries, 'eval_queries')
  if c.inner_lr is not None:
    check_learning_rate(c.inner_lr, 'inner_lr')
  check_learning_rate(c.outer_lr, 'outer_lr')
  for name in ('inner_opt', 'outer_opt'):
    if getattr(c, name) not in OPTIMIZERS:
      raise ValueError(f'unknown {name} {getattr(c, name)!r}; expected one of {", ".join(OPTIMIZERS)}')
  log_every = min(c.log_every, steps)
  default_period = max(log_every, steps // 10 // log_every * log_every)
  return dataclasses.replace(
      c, log_every=log_every,
      eval_every=c.eval_every or default_period, checkpoint_every=c.checkpoint_every or default_period)


class Experiment(NamedTuple):
  """The pure parts of a run, built from a resolved `Config`.

  `learner` meta-trains on `train_tasks`; `test_learner` (the same meta-parameters, built for the test ways) is
  scored with `score` on `valid_tasks` and `test_tasks`. `metric` names the score: 'mse' or 'accuracy'.
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


def _optimizer(name: str, lr: float | optax.Schedule) -> optax.GradientTransformation:
  # eps_root > 0 keeps Adam's second-order gradient finite where an inner gradient is exactly zero.
  if name == 'sgd':
    return optax.sgd(lr)
  return optax.adam(lr, b1=0.0 if name == 'adam0' else 0.9, eps_root=1e-8)


def _accuracy(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  return {'accuracy': losses.accuracy(logits, labels)}


def _gradient_based(c: Config, apply_fn: ApplyFn, loss_fn, metrics_fn) -> MetaLearner:
  from jmeta import algorithms
  inner_opt = _optimizer(c.inner_opt, c.inner_lr) if c.inner_lr is not None else None
  common = dict(loss_fn=loss_fn, metrics_fn=metrics_fn)
  if c.algo in ('maml', 'fomaml', 'anil'):
    return algorithms.maml(apply_fn, inner_opt, c.inner_steps, first_order=c.algo == 'fomaml',
                           mask=algorithms.path_mask('head') if c.algo == 'anil' else None, remat=c.remat, **common)
  if c.algo == 'metasgd':
    return algorithms.metasgd(apply_fn, c.inner_steps, remat=c.remat, **common)
  if c.algo == 'reptile':
    return algorithms.reptile(apply_fn, inner_opt, c.inner_steps, inner_batch=c.inner_batch, **common)
  return algorithms.pretrained(apply_fn, inner_opt, c.inner_steps, **common)


def _sinusoid(c: Config):
  from jmeta.datasets.sinusoid import sinusoid
  from jmeta.models.mlp import MLP
  model = MLP(hidden=(40, 40), out=1)
  train_tasks, test_tasks = sinusoid(c.shots, c.queries), sinusoid(c.shots, c.eval_queries)
  learner = _gradient_based(c, model.apply, losses.mse, None)
  init_model = lambda key: model.init(key, train_tasks(key).support.x)
  return init_model, learner, lambda ways: learner, train_tasks, test_tasks, test_tasks, losses.mse, 'mse'


def _omniglot(c: Config, data_dir: str | None):
  from jmeta import algorithms
  from jmeta.datasets import omniglot
  from jmeta.datasets.episodes import episodes
  from jmeta.models import conv4

  data = omniglot.load(data_dir)
  parts = {part: omniglot.split_images(data, part, c.split) for part in ('train', 'val', 'test')}
  if not len(parts['val']):
    parts['val'] = parts['test']  # Lake et al.'s split has no validation characters.
  rotations = c.split == 'vinyals'
  train_tasks = episodes(parts['train'], c.train_ways, c.shots, c.queries, rotations=rotations)
  valid_tasks, test_tasks = (episodes(parts[p], c.ways, c.shots, c.eval_queries, rotations=rotations)
                             for p in ('val', 'test'))
  example = parts['train'][:2, 0]

  if c.algo in GRADIENT_BASED:
    model = conv4.functional(conv4.Classifier(conv4.conv4_maml(c.filters), c.ways))
    learner = _gradient_based(c, model.apply, losses.cross_entropy, _accuracy)
    make = lambda ways: learner
  else:
    encoder = {'relation': conv4.conv4_relation}.get(c.algo, conv4.conv4_protonet)(c.filters)
    model = conv4.functional(encoder)
    shape = jax.eval_shape(model.apply, jax.eval_shape(model.init, jax.random.PRNGKey(0), example), example).shape
    make = {
        'protonet': lambda ways: algorithms.protonet(model.apply, ways),
        'matching': lambda ways: algorithms.matching_net(model.apply, ways, scale=c.attention_scale,
                                                         learn_scale=c.learn_attention_scale),
        'relation': lambda ways: algorithms.relation_net(model.apply, ways, shape[1:]),
        'siamese': lambda ways: algorithms.siamese_net(model.apply, ways, shape[-1]),
    }[c.algo]
    learner = make(c.train_ways)
  return (lambda key: model.init(key, example), learner, make, train_tasks, valid_tasks, test_tasks,
          losses.accuracy, 'accuracy')


def build(config: Config, data_dir: str | None = None) -> Experiment:
  """The learner, optimizers, model and task samplers of `config` (resolved first).

  `data_dir` is where the dataset's files are (Omniglot's zips), else `$JMETA_DATA_DIR`, else the user cache.
  """
  c = resolve(config)
  if c.dataset == 'sinusoid':
    init_model, learner, make, train_tasks, valid_tasks, test_tasks, score, metric = _sinusoid(c)
  else:
    init_model, learner, make, train_tasks, valid_tasks, test_tasks, score, metric = _omniglot(c, data_dir)
  return Experiment(c, learner, make(c.ways), _optimizer(c.outer_opt, outer_schedule(c)), init_model,
                    train_tasks, valid_tasks, test_tasks, score, metric)


def outer_schedule(c: Config) -> float | optax.Schedule:
  """The outer step size of a resolved config: constant, annealed linearly to 0, or halved periodically."""
  if c.outer_decay:
    return optax.linear_schedule(c.outer_lr, 0.0, c.steps)
  if c.outer_halve_every:
    return optax.exponential_decay(c.outer_lr, c.outer_halve_every, 0.5, staircase=True)
  return c.outer_lr


def keys(seed: int) -> dict[str, jax.Array]:
  """The independent PRNG streams of a run: model init, training state, validation tasks."""
  root = jax.random.PRNGKey(seed)
  return dict(zip(('model', 'train', 'valid'), jax.random.split(root, 3)))


def test_key(seed: int) -> jax.Array:
  """The key of the meta-test episodes for `seed`, independent of every training stream."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), 2**31 - 1)
