"""A run's configuration: plain data, resolved from the command, the published recipe and the defaults."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from jmeta.experiments.registry import Algorithm, Dataset, Option, algorithms, datasets, get_algorithm, get_dataset

DEFAULT_DATASET = 'sinusoid'
OPTIMIZERS = ('sgd', 'adam', 'adam0', 'rmsprop')

RUN_OPTIONS = (
    Option('meta_batch', 'tasks per meta-step (default: published)'),
    Option('steps', 'meta-steps in all (default: published)'),
    Option('outer_lr', 'outer step size (default: published)', float),
    Option('outer_opt', 'outer optimizer: sgd, adam, adam0 (Adam with beta1 = 0) or rmsprop (decay 0.95, momentum '
           '0.9) (default: published)', str,
           choices=OPTIMIZERS),
    Option('outer_decay', 'anneal the outer step size linearly to 0 over the run (default: published)', bool,
           default=False),
    Option('outer_halve_every', 'halve the outer step size every this many meta-steps (default: published)',
           optional=True),
    Option('seed', 'seed of the run\'s PRNG streams (default 0)', minimum=0, default=0),
    Option('log_every', 'meta-steps per logged record (default 100)', default=100),
    Option('eval_every', 'meta-steps between validations (default: a tenth of the run)', optional=True),
    Option('checkpoint_every', 'meta-steps between checkpoints (default: as eval)', optional=True),
    Option('valid_episodes', 'validation tasks at each validation; 0 skips validation (default 200)', minimum=0,
           default=200),
    Option('eval_episodes', 'test tasks in the final evaluation (default 1000)', default=1000),
)
"""The fields every run has, whatever its algorithm and dataset."""

LEGACY_FIELDS = frozenset((
    'ways', 'train_ways', 'shots', 'queries', 'split', 'filters', 'inner_steps', 'eval_inner_steps', 'inner_lr',
    'inner_opt', 'inner_batch', 'attention_scale', 'learn_attention_scale', 'eval_queries', 'remat'))
"""Fields that `config.json` files written before the registry hold for every run, used or not."""


def options(algorithm: Algorithm, dataset: Dataset) -> dict[str, Option]:
  """The fields of a run of `algorithm` on `dataset`, by name: the run's, the dataset's, the algorithm's."""
  out = {o.name: o for o in RUN_OPTIONS}
  for o in dataset.options + algorithm.options:
    out.setdefault(o.name, o)
  return out


class Config(Mapping[str, Any]):
  """Everything that defines a run: `algo`, `dataset` and the fields of its options, as plain data.

  Fields read as attributes (`config.inner_steps`) or items; a field left out (or None) takes the published
  default when the config is resolved. `Config('maml', 'omniglot', shots=5)`.
  """

  def __init__(self, algo: str, dataset: str | None = None, **fields: Any):
    self._fields = {'algo': algo, 'dataset': dataset or DEFAULT_DATASET, **fields}

  def __getitem__(self, name: str) -> Any:
    return self._fields[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self._fields)

  def __len__(self) -> int:
    return len(self._fields)

  def __getattr__(self, name: str) -> Any:
    try:
      return self.__dict__['_fields'][name]
    except KeyError:
      raise AttributeError(f'{name!r} is not a field of this {self.__dict__["_fields"]["algo"]} run on '
                           f'{self.__dict__["_fields"]["dataset"]}') from None

  def __eq__(self, other: object) -> bool:
    return isinstance(other, Config) and self._fields == other._fields

  def __hash__(self) -> int:
    return hash(tuple(sorted((k, repr(v)) for k, v in self._fields.items())))

  def __repr__(self) -> str:
    return f'Config({", ".join(f"{k}={v!r}" for k, v in self._fields.items())})'

  def replace(self, **changes: Any) -> 'Config':
    """A copy with `changes` applied."""
    return Config(**{**self._fields, **changes})

  def to_json(self) -> dict[str, Any]:
    """The fields as one flat dict, as `config.json` holds them."""
    return dict(self._fields)

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> 'Config':
    """A config from `config.json`, including those written before the registry: their unused fields are dropped,
    and an algorithm's `upgrade` fills options that did not exist yet."""
    data = dict(data)
    algorithm = get_algorithm(data.get('algo'))
    dataset = get_dataset(data.get('dataset') or DEFAULT_DATASET)
    data = algorithm.upgrade(data)
    known = options(algorithm, dataset)
    return cls(**{k: v for k, v in data.items() if k in known or k in ('algo', 'dataset') or
                  k not in LEGACY_FIELDS})


def _owners(name: str) -> list[Algorithm | Dataset]:
  """The registered algorithms and datasets that declare option `name`, each kind by name (not by the order in
  which modules happened to register them, so that messages do not depend on what was imported first)."""
  entries = sorted(algorithms().values(), key=lambda e: e.name) + sorted(datasets().values(), key=lambda e: e.name)
  return [e for e in entries if any(o.name == name for o in e.options)]


def _describe(owners: list[Algorithm | Dataset]) -> str:
  names = [e.title if isinstance(e, Algorithm) else e.name for e in owners]
  return names[0] if len(names) == 1 else ', '.join(names[:-1]) + ' and ' + names[-1]


def _reject_foreign(given: Mapping[str, Any], known: Mapping[str, Option], algorithm: Algorithm,
                    dataset: Dataset) -> None:
  """Raises `ValueError` for a given field that no option of this run declares, naming who declares it."""
  foreign = [k for k in given if k not in known]
  if not foreign:
    return
  name = foreign[0]
  owners = _owners(name)
  if not owners:
    raise ValueError(f'unknown field {name!r} for {algorithm.name} on {dataset.name}; expected one of '
                     f'{", ".join(known)}')
  group = [o.name for o in owners[0].options if o.name not in known and _owners(o.name) == owners]
  listed = ', '.join(group[:-1]) + ' and ' + group[-1] if len(group) > 1 else group[0]
  verb = 'apply' if len(group) > 1 else 'applies'
  not_ = algorithm.name if isinstance(owners[0], Algorithm) else dataset.name
  raise ValueError(f'{name} is not a field of {algorithm.name} on {dataset.name}: {listed} {verb} to '
                   f'{_describe(owners)}, not {not_}')


def resolve(config: Config) -> Config:
  """`config` with every default filled in and every field checked; raises `ValueError` naming a bad field.

  A field takes, in order: the value given, the algorithm's published value on the dataset, the dataset's
  default, the option's default. Defaults that are functions of other fields are computed last, in that order.
  """
  algorithm = get_algorithm(config['algo'])
  dataset = get_dataset(config['dataset'])
  if dataset.name not in algorithm.published:
    raise ValueError(f'{algorithm.name} does not run on {dataset.name}; it runs on '
                     f'{", ".join(algorithm.published)} (--dataset)')
  known = options(algorithm, dataset)
  given = {k: v for k, v in config.items() if k not in ('algo', 'dataset') and v is not None}
  _reject_foreign(given, known, algorithm, dataset)
  layers = [{name: o.default for name, o in known.items()}, dict(dataset.defaults),
            dict(algorithm.published[dataset.name])]
  fields = {name: None for name in known}
  for layer in layers:
    fields.update({k: v for k, v in layer.items() if k in known})
  fields.update(given)
  for layer in layers:  # computed defaults see the fields resolved so far
    for k, v in layer.items():
      if k not in given and callable(v) and fields[k] is v:
        fields[k] = v(fields)
  for name, option in known.items():
    fields[name] = option.check(fields[name])
  c = Config(algorithm.name, dataset.name, **fields)
  if c.outer_halve_every is not None and c.outer_decay:
    raise ValueError('outer_decay (linear annealing) and outer_halve_every are two schedules; choose one')
  if algorithm.fixed_ways and 'train_ways' in c and c.train_ways != c.ways:
    raise ValueError(f'{c.algo} trains a {c.ways}-way classifier head; --train-ways {c.train_ways} must equal '
                     f'--ways {c.ways}')
  dataset.check(c)
  algorithm.check(c)
  log_every = min(c.log_every, c.steps)
  default_period = max(log_every, c.steps // 10 // log_every * log_every)
  return c.replace(log_every=log_every, eval_every=c.eval_every or default_period,
                   checkpoint_every=c.checkpoint_every or default_period)
