"""The experiment registry: what each algorithm and dataset declares, beside its own code, to be run by name.

An algorithm registers an `Algorithm`: its options, its published defaults per dataset (with their sources) and
a `build` that turns a resolved config and a dataset's `Data` into a `Recipe`. A dataset registers a `Dataset`: its
options, defaults, and a `load` that builds its task samplers, models and score. `jmeta train`, `jmeta eval`,
`jmeta list` and `jmeta.experiments.build` are made from these entries, so adding an algorithm or a dataset
touches no shared file beyond the one line of `BUILTIN` that imports its module (a module of your own can call
`register_algorithm` or `register_dataset` itself).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping, NamedTuple

import jax

from jmeta.base import MetaLearner, Params
from jmeta.checks import check_positive_int, check_positive_number
from jmeta.tasks import Task

BUILTIN = (
    'jmeta.algorithms',           # maml, fomaml, anil, metasgd, reptile, pretrained, protonet, matching, ...
    'jmeta.datasets.sinusoid',
    'jmeta.datasets.omniglot',
    'jmeta.datasets.omniglot_sequences',
    'jmeta.datasets.gp',
    'jmeta.datasets.ambiguous',
    'jmeta.datasets.image_folders',   # mini-imagenet, tiered-imagenet, cifar-fs, fc100
    'jmeta.optimizers.experiment',    # learned-opt; quadratic, digits
)
"""Modules whose import registers jmeta's own algorithms and datasets: one line each."""


@dataclasses.dataclass(frozen=True)
class Option:
  """One field of a run's configuration, with its command-line flag.

  Attributes:
    name: the field's name in `Config` and `config.json`; the flag is `--name-with-dashes` unless `flag` says.
    help: one line for `--help`.
    type: `int`, `float`, `str` or `bool`.
    default: the value when neither the command nor a published recipe gives one: a value, or a function of the
      other resolved fields (`lambda f: f['inner_steps']`).
    optional: None is a valid resolved value (the option is off or unused).
    minimum: the smallest valid `int`.
    choices: the valid `str` values.
    flag, false_flag: the flags; a `bool` option's `flag` sets True and `false_flag` (if any) False.
    validate: `(value, name) -> value` in place of the checks of `type`, raising `ValueError` naming the field.
  """
  name: str
  help: str
  type: type = int
  default: Any = None
  optional: bool = False
  minimum: int = 1
  choices: tuple[str, ...] = ()
  flag: str | None = None
  false_flag: str | None = None
  validate: Callable[[Any, str], Any] | None = None

  @property
  def flags(self) -> tuple[str, ...]:
    return (self.flag or '--' + self.name.replace('_', '-'),) + ((self.false_flag,) if self.false_flag else ())

  def check(self, value: Any) -> Any:
    """`value` checked (and converted) for this option; raises `ValueError` naming the field."""
    if value is None:
      if self.optional:
        return None
      raise ValueError(f'{self.name} needs a value; no published default covers it')
    if self.validate is not None:
      return self.validate(value, self.name)
    if self.type is bool:
      if not isinstance(value, bool):
        raise ValueError(f'{self.name} must be true or false; got {value!r}')
      return value
    if self.type is int:
      return check_positive_int(value, self.name, minimum=self.minimum)
    if self.type is float:
      return check_positive_number(value, self.name)
    if self.choices and value not in self.choices:
      raise ValueError(f'unknown {self.name} {value!r}; expected one of {", ".join(self.choices)}')
    return value


class Published(NamedTuple):
  """A figure from a paper that a reproduction in `benchmarks/` stands beside.

  `setting` names the fields it was measured at (e.g. `{'ways': 5, 'shots': 1}`); `value` is in the units of
  `metric` ('accuracy %' or 'mse'); `source` cites the paper and the table.
  """
  dataset: str
  setting: Mapping[str, Any]
  metric: str
  value: float
  source: str


class Data(NamedTuple):
  """What a dataset hands an algorithm's `build`.

  Attributes:
    train_tasks: `key -> Task` of the training ways, shots and queries.
    valid_tasks, test_tasks: `key -> Task` at the test ways and `eval_queries` (the same sampler if the dataset has
      no validation part).
    model: `role -> jmeta.models.Functional`: 'predictor' (the targets: a `ways`-way classifier or a regressor),
      'embedding' (`[examples, dim]` features) or 'feature_map' (`[examples, H, W, C]`). A dataset provides the
      roles its models fit; asking for another raises `ValueError`.
    example_x: two inputs, `[2, *input_shape]`, to initialise and shape models.
    loss_fn: `(predictions, targets) -> scalar` of the predictor (cross-entropy or squared error).
    metrics_fn: extra `(predictions, targets) -> {name: scalar}` reported while training, or None.
    score: `(predictions, targets) -> scalar` of one test episode; `metric` names it ('accuracy' or 'mse').
    breakdown: `(predictions, targets) -> [len(breakdown_names)]` of one test episode, reported beside `score` in
      the final record (e.g. the accuracy at each instance of a class in a label-offset sequence), or None.
    breakdown_names: the record's name for each entry of `breakdown`.
  """
  train_tasks: Callable[[jax.Array], Task]
  valid_tasks: Callable[[jax.Array], Task]
  test_tasks: Callable[[jax.Array], Task]
  model: Callable[[str], Any]
  example_x: jax.Array
  loss_fn: Callable[[jax.Array, jax.Array], jax.Array]
  metrics_fn: Callable[[jax.Array, jax.Array], dict[str, jax.Array]] | None
  score: Callable[[jax.Array, jax.Array], jax.Array]
  metric: str
  breakdown: Callable[[jax.Array, jax.Array], jax.Array] | None = None
  breakdown_names: tuple[str, ...] = ()


class Recipe(NamedTuple):
  """What an algorithm's `build` returns: the model's initial weights, the learner that meta-trains, and the one
  evaluated (the same meta-parameters built for the test ways)."""
  init_model: Callable[[jax.Array], Params]
  learner: MetaLearner
  test_learner: MetaLearner


class Evaluation(NamedTuple):
  """A dataset's own test protocol, as a `jmeta eval` flag: `run(experiment, params, data_dir, inner_steps)`
  returns the record printed; `fixed` names the config fields the protocol fixes (e.g. `{'ways': 20}`)."""
  flag: str
  help: str
  run: Callable[..., dict]
  fixed: Mapping[str, Any] = {}


class Dataset(NamedTuple):
  """A task distribution that runs by name.

  Attributes:
    name: as `--dataset` takes it.
    kind: its task kind: 'classification' or 'regression' (support and query sets, `jmeta.Task`), or 'sequence'
      (label-offset episodes, `jmeta.SequenceTask`).
    summary: one line for `jmeta list`.
    options: its fields (ways, shots, ...), each with a flag.
    defaults: values (or functions of the resolved fields) for its own fields and the run's.
    load: `(config, data_dir) -> Data`, given a resolved config.
    check: `config -> None`, raising `ValueError` on a bad combination of resolved fields.
    evaluations: protocols of its own, as `jmeta eval` flags.
  """
  name: str
  kind: str
  summary: str
  options: tuple[Option, ...]
  defaults: Mapping[str, Any]
  load: Callable[..., Data]
  check: Callable[[Any], None] = lambda config: None
  evaluations: tuple[Evaluation, ...] = ()


class Algorithm(NamedTuple):
  """A meta-learner that runs by name.

  Attributes:
    name: as `--algo` takes it.
    family: 'gradient-based', 'metric-based', ...
    title: what messages call it ('matching networks').
    paper: authors, year and arXiv id.
    options: its fields, each with a flag (a family's shared options included).
    published: `dataset -> defaults`: the settings of the paper (or of its code) on each dataset it runs on,
      values or functions of the resolved fields, each with its source in a comment where it is defined.
    build: `(config, data) -> Recipe`.
    check: `config -> None`, raising `ValueError` on a bad combination of resolved fields.
    fixed_ways: its model ends in a `ways`-way head, so it trains and is tested at `ways`.
    results: published figures that `benchmarks/` reproduces.
    upgrade: `config.json dict -> dict`, for runs saved before one of its options existed.
    grad_of_mean: its `meta_grad` is `jax.grad(loss)`, so training may differentiate a meta-batch's mean loss
      (`jmeta.meta_step`'s `grad_of_mean`), where that was measured faster.
  """
  name: str
  family: str
  title: str
  paper: str
  options: tuple[Option, ...]
  published: Mapping[str, Mapping[str, Any]]
  build: Callable[[Any, Data], Recipe]
  check: Callable[[Any], None] = lambda config: None
  fixed_ways: bool = False
  results: tuple[Published, ...] = ()
  upgrade: Callable[[dict], dict] = lambda data: data
  grad_of_mean: bool = False


_ALGORITHMS: dict[str, Algorithm] = {}
_DATASETS: dict[str, Dataset] = {}
_loaded = False


def register_algorithm(algorithm: Algorithm) -> Algorithm:
  """Adds `algorithm` to the registry (its name must be new); returns it."""
  if algorithm.name in _ALGORITHMS:
    raise ValueError(f'an algorithm named {algorithm.name!r} is already registered')
  _ALGORITHMS[algorithm.name] = algorithm
  return algorithm


def register_dataset(dataset: Dataset) -> Dataset:
  """Adds `dataset` to the registry (its name must be new); returns it."""
  if dataset.name in _DATASETS:
    raise ValueError(f'a dataset named {dataset.name!r} is already registered')
  _DATASETS[dataset.name] = dataset
  return dataset


def _load_builtin() -> None:
  global _loaded
  if not _loaded:
    _loaded = True
    for module in BUILTIN:
      importlib.import_module(module)


def algorithms() -> dict[str, Algorithm]:
  """Every registered algorithm by name, in registration order."""
  _load_builtin()
  return dict(_ALGORITHMS)


def datasets() -> dict[str, Dataset]:
  """Every registered dataset by name, in registration order."""
  _load_builtin()
  return dict(_DATASETS)


def get_algorithm(name: str, *, load_builtin: bool = True) -> Algorithm:
  """The algorithm registered as `name`; `ValueError` listing the names otherwise. `load_builtin=False` looks
  only at what is registered so far, for a module that builds on another's entry while jmeta is being imported."""
  known = algorithms() if load_builtin else _ALGORITHMS
  if name not in known:
    raise ValueError(f'unknown algorithm {name!r}; expected one of {", ".join(known)}')
  return known[name]


def get_dataset(name: str) -> Dataset:
  """The dataset registered as `name`; `ValueError` listing the names otherwise."""
  known = datasets()
  if name not in known:
    raise ValueError(f'unknown dataset {name!r}; expected one of {", ".join(known)}')
  return known[name]
