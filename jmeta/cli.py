"""The `jmeta` command: `jmeta train ...`, `jmeta eval DIR ...`, `jmeta list`, `jmeta bench ...`, made from the
experiment registry (`jmeta.experiments`)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Sequence

CONFIG_FILE = 'config.json'


def _add_option(group, option, *, hidden: bool = False) -> None:
  """`option`'s flags in `group`; `hidden` ones parse but stay out of `--help` (so `resolve` can say whose they
  are)."""
  help_ = argparse.SUPPRESS if hidden else option.help
  if option.type is bool:
    flags = group.add_mutually_exclusive_group() if option.false_flag else group
    flags.add_argument(option.flags[0], dest=option.name, action='store_true', default=None, help=help_)
    if option.false_flag:
      flags.add_argument(option.false_flag, dest=option.name, action='store_false', default=None,
                         help=argparse.SUPPRESS if hidden else f'the opposite of {option.flags[0]}')
    return
  group.add_argument(*option.flags, dest=option.name, type=option.type, default=None, help=help_,
                     metavar={int: 'N', float: 'X'}.get(option.type, 'NAME'))


def _describe(entry) -> str:
  """One line on an algorithm (title, family, paper, datasets) or a dataset (kind, summary) for `--help`."""
  from jmeta import experiments
  if isinstance(entry, experiments.Dataset):
    return f'{entry.kind}: {entry.summary}.' + ('' if entry.options else ' No options of its own.')
  own = '' if entry.options else ' No options of its own.'
  return f'{entry.title} ({entry.family}; {entry.paper}). Runs on {", ".join(entry.published)}.{own}'


def _train_parser(algorithm=None, dataset=None) -> argparse.ArgumentParser:
  """`jmeta train`'s parser: the run's flags, then `dataset`'s and `algorithm`'s own (every other registered
  option parses too, unlisted, so that using one names the algorithm or dataset it belongs to)."""
  from jmeta import experiments
  names = ', '.join(experiments.algorithms())
  parser = argparse.ArgumentParser(
      prog='jmeta train', description='Meta-train, log metrics, checkpoint, evaluate on fresh test tasks.',
      epilog='`jmeta train --algo A [--dataset D] --help` lists the options of A (and D); `jmeta list` shows what '
      'runs on what.')
  parser.add_argument('--algo', required=True, help=f'the algorithm: {names}')
  parser.add_argument('--dataset', default=None, help=f'the dataset: {", ".join(experiments.datasets())} '
                      f'(default {experiments.DEFAULT_DATASET})')
  run = parser.add_argument_group('the run')
  run.add_argument('--out', required=True, help='run directory: config, metrics.jsonl, checkpoints')
  run.add_argument('--data-dir', help='where the dataset files are (default: $JMETA_DATA_DIR, else the cache)')
  run.add_argument('--resume', action='store_true', help='continue the run in --out from its last checkpoint')
  run.add_argument('--time-limit', type=float, help='stop after this many minutes of training (at the next '
                   'logged step), checkpoint, evaluate; --resume goes on')
  run.add_argument('--devices', type=int, help='shard each meta-batch over this many devices (default: one); on a '
                   'CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N provides N')
  run.add_argument('--coordinator', metavar='HOST:PORT', help='train with several processes, one command each '
                   '(jax.distributed): process 0\'s host and a free port, the same in every command (default: '
                   '$JMETA_COORDINATOR); the meta-batch is split over the devices of all processes')
  run.add_argument('--num-processes', type=int, metavar='N', help='how many processes train together (default: '
                   '$JMETA_NUM_PROCESSES, else 1)')
  run.add_argument('--process-id', type=int, metavar='I', help='this process\'s index, 0..N-1 (default: '
                   '$JMETA_PROCESS_ID); process 0 writes the configuration and the metrics')
  run.add_argument('--vmap-size', type=int, help='tasks vmapped at once; the meta-batch is mapped over in chunks '
                   'of this many (default: all at once). On a 2-core CPU, 8 made 5-shot MAML 1.6x faster '
                   '(benchmarks/results/vmap_sizes.json)')
  run.add_argument('--no-progress', action='store_true', help='no progress bar')
  for option in experiments.RUN_OPTIONS:
    _add_option(run, option)
  shown = {o.name for o in experiments.RUN_OPTIONS}
  for entry, kind in ((dataset, 'dataset'), (algorithm, 'algorithm')):
    if entry is not None:
      group = parser.add_argument_group(f'{entry.name} ({kind}) options', _describe(entry))
      for option in entry.options:
        if option.name not in shown:
          _add_option(group, option)
          shown.add(option.name)
  for entry in list(experiments.datasets().values()) + list(experiments.algorithms().values()):
    for option in entry.options:
      if option.name not in shown:
        _add_option(parser, option, hidden=True)
        shown.add(option.name)
  return parser


def parse_train(argv: Sequence[str]) -> argparse.Namespace:
  """`jmeta train`'s arguments: `--algo` and `--dataset` first, which say what the other flags are.

  Raises `ValueError` for an unknown algorithm or dataset; `--help` lists the chosen ones' options."""
  from jmeta import experiments
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument('--algo')
  pre.add_argument('--dataset')
  known, _ = pre.parse_known_args(argv)
  algorithm = dataset = None
  if known.algo is not None:
    algorithm = experiments.get_algorithm(known.algo)
    name = known.dataset or experiments.DEFAULT_DATASET
    if known.dataset is None and name not in algorithm.published and ({'-h', '--help'} & set(argv)):
      name = next(iter(algorithm.published))  # the help of `--algo protonet` shows a dataset protonet runs on
    dataset = experiments.get_dataset(name)
  args = _train_parser(algorithm, dataset).parse_args(argv)
  args.command = 'train'
  return args


def _parser() -> argparse.ArgumentParser:
  from jmeta import experiments
  parser = argparse.ArgumentParser(prog='jmeta', description='Meta-learning in JAX.')
  sub = parser.add_subparsers(dest='command', required=True)
  sub.add_parser('train', add_help=False, help='meta-train, log metrics, checkpoint, evaluate on fresh test tasks '
                 '(jmeta train --algo A --help: its options)')

  ev = sub.add_parser('eval', help='evaluate a trained run on fresh test tasks')
  ev.add_argument('run_dir')
  ev.add_argument('--episodes', type=int, default=1000, help='test tasks (default 1000)')
  ev.add_argument('--seed', type=int, default=0, help='seed of the test tasks (default 0)')
  ev.add_argument('--inner-steps', type=int, help='inner steps at test time (default: the run\'s '
                  'eval-inner-steps)')
  ev.add_argument('--ways', type=int, help='classes per test episode (default: the run\'s own)')
  ev.add_argument('--shots', type=int, help='support examples per class (default: the run\'s own)')
  ev.add_argument('--data-dir', help='where the dataset files are (default: $JMETA_DATA_DIR, else the cache)')
  for dataset in experiments.datasets().values():
    for evaluation in dataset.evaluations:
      ev.add_argument(evaluation.flag, action='store_true', dest=_dest(evaluation.flag),
                      help=f'{dataset.name}: {evaluation.help}')

  ls = sub.add_parser('list', help='the algorithms and datasets, what runs on what, and published figures')
  ls.add_argument('--json', action='store_true', help='one JSON object instead of the tables')

  from jmeta.bench.run import add_arguments
  add_arguments(sub.add_parser('bench', help='time meta-steps of jmeta and PyTorch side by side; JSON and a table'))
  return parser


def _dest(flag: str) -> str:
  return flag.lstrip('-').replace('-', '_')


def _train_config(args: argparse.Namespace):
  from jmeta.experiments import Config, resolve
  given = {k: v for k, v in vars(args).items() if v is not None and k not in _NOT_FIELDS}
  path = os.path.join(args.out, CONFIG_FILE)
  if args.resume:
    if not os.path.exists(path):
      raise ValueError(f'--resume: no run to resume in {args.out} (no {CONFIG_FILE})')
    with open(path) as f:
      saved = resolve(Config.from_json(json.load(f)))
    conflicts = {k: (saved.get(k), v) for k, v in given.items() if k != 'steps' and saved.get(k) != v}
    if args.dataset is not None and args.dataset != saved.dataset:
      conflicts['dataset'] = (saved.dataset, args.dataset)
    if args.algo != saved.algo:
      conflicts['algo'] = (saved.algo, args.algo)
    if conflicts:
      detail = ', '.join(f'{k}: run has {a!r}, given {b!r}' for k, (a, b) in conflicts.items())
      raise ValueError(f'--resume continues the run as it was configured; these arguments differ: {detail}')
    return resolve(saved.replace(steps=given.get('steps', saved.steps)))
  if os.path.exists(path):
    raise ValueError(f'{args.out} already holds a run; pass --resume to continue it or choose another --out')
  return resolve(Config(args.algo, args.dataset, **given))


_NOT_FIELDS = frozenset(('algo', 'dataset', 'command', 'out', 'data_dir', 'resume', 'time_limit', 'devices',
                         'vmap_size', 'no_progress', 'coordinator', 'num_processes', 'process_id'))
"""`jmeta train` arguments that are not fields of the run's config."""


def _test_scores(experiment, tasks, inner_steps: int):
  """`scores(params, key, episodes) -> [episodes]`, or `[episodes, 1 + len(breakdown_names)]` with the dataset's
  breakdown (the score first), from one compiled evaluator."""
  from jmeta.evaluation import evaluator
  import jax.numpy as jnp

  def with_breakdown(predictions, targets):
    details = experiment.breakdown(predictions, targets)
    return jnp.concatenate([experiment.score(predictions, targets)[None], details])

  score = experiment.score if experiment.breakdown is None else with_breakdown
  return evaluator(experiment.test_learner, tasks, score, steps=inner_steps if experiment.inner_steps else None)


def _summary(experiment, values):
  """The score's `Summary` of `_test_scores` values, and `{name: Summary}` of the breakdown (empty without)."""
  from jmeta.evaluation import summarize
  if experiment.breakdown is None:
    return summarize(values), {}
  return summarize(values[:, 0]), {k: summarize(values[:, 1 + i]) for i, k in enumerate(experiment.breakdown_names)}


def _final_record(experiment, scores, params, *, episodes: int, seed: int, inner_steps: int) -> dict:
  from jmeta.experiments import test_key
  c = experiment.config
  summary, details = _summary(experiment, scores(params, test_key(seed), episodes))
  record = {experiment.metric: summary.mean, 'ci95': summary.ci95}
  record.update({k: s.mean for k, s in details.items()})
  record.update({f'{k}_ci95': s.ci95 for k, s in details.items()})
  if 'ways' in c:
    record['ways'] = c.ways
  record['episodes'] = episodes
  if 'shots' in c:
    record['shots'] = c.shots
  if experiment.inner_steps:
    record['inner_steps'] = inner_steps
  return record


def train(args: argparse.Namespace) -> dict:
  from jmeta.training import distributed
  several = distributed.initialize(args.coordinator, args.num_processes, args.process_id)  # before any computation
  if several and args.devices is not None:
    raise ValueError(f'--devices {args.devices}: with several processes the meta-batch is split over all the '
                     'devices of all processes; leave out --devices')
  config = _train_config(args)
  distributed.barrier('jmeta train: run directory checked')  # by all, before process 0 writes config.json
  import jax
  from jmeta import experiments
  from jmeta.tasks import task_spec
  from jmeta.training import fit
  from jmeta.training.plots import plot_learning_curve

  if args.vmap_size is not None:
    from jmeta.checks import check_positive_int
    check_positive_int(args.vmap_size, '--vmap-size')
  experiment = experiments.build(config, args.data_dir)
  c = experiment.config
  os.makedirs(args.out, exist_ok=True)
  if not args.resume and distributed.is_main():
    with open(os.path.join(args.out, CONFIG_FILE), 'w') as f:
      json.dump(c.to_json(), f, indent=2)

  keys = experiments.keys(c.seed)
  eval_inner_steps = c.get('eval_inner_steps')
  valid = _test_scores(experiment, experiment.valid_tasks, eval_inner_steps)

  def eval_fn(params):
    s, details = _summary(experiment, valid(params, keys['valid'], c.valid_episodes))
    return {f'valid_{experiment.metric}': s.mean, 'valid_ci95': s.ci95,
            **{f'valid_{k}': d.mean for k, d in details.items()}}

  from jmeta.training.sharding import task_mesh
  mesh = task_mesh(args.devices) if args.devices is not None else None
  if several:
    mesh = distributed.global_mesh()
  # A run resumed from a checkpoint restores into the initial state's shapes alone: computing that state would
  # compile its initialisation (seconds for conv4 or a MANN) only to overwrite it. A mesh replicates the template
  # before restoring, which needs real arrays.
  restoring = False
  if args.resume and mesh is None:
    from jmeta.training import Checkpoints
    checkpoints = Checkpoints(os.path.join(args.out, 'checkpoints'))
    try:
      restoring = checkpoints.latest_step() is not None
    finally:
      checkpoints.close()
  state = experiments.initial_state(experiment, abstract=restoring)
  time_limit = None
  if args.time_limit is not None:
    from jmeta.checks import check_positive_number
    time_limit = 60 * check_positive_number(args.time_limit, '--time-limit')
  state = fit(experiment.learner, experiment.outer_opt, experiment.train_tasks, state, meta_batch=c.meta_batch,
              steps=c.steps, out_dir=args.out, log_every=c.log_every, checkpoint_every=c.checkpoint_every,
              eval_every=c.eval_every, eval_fn=eval_fn if c.valid_episodes else None, resume=args.resume,
              progress=not args.no_progress, mesh=mesh, time_limit=time_limit, vmap_size=args.vmap_size,
              # Shapes only: sampling a task eagerly compiled a program for each of its dozens of operations.
              task_spec=task_spec(jax.eval_shape(experiment.train_tasks, jax.random.PRNGKey(0))),
              grad_of_mean=experiment.algorithm.grad_of_mean)
  if int(state.step) < c.steps:
    print(f'jmeta: the time limit stopped training at step {int(state.step)} of {c.steps}; the checkpoint is '
          'saved, --resume goes on', file=sys.stderr)
  if distributed.is_main():
    plot_learning_curve(args.out)
  same = experiment.test_tasks is experiment.valid_tasks
  test = valid if same else _test_scores(experiment, experiment.test_tasks, eval_inner_steps)
  params = distributed.local_copy(state.params) if several else state.params  # each process evaluates alone
  return _final_record(experiment, test, params, episodes=c.eval_episodes, seed=c.seed,
                       inner_steps=eval_inner_steps)


def load_run(run_dir: str, data_dir: str | None = None, **overrides):
  """The experiment and final state of a run directory written by `jmeta train` (by any version of jmeta).

  `overrides` replace configuration fields for evaluation (e.g. `ways`, `shots`); the checkpoint must still fit.
  """
  from jmeta import experiments
  from jmeta.training import Checkpoints
  path = os.path.join(run_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(f'{run_dir} is not a jmeta run directory: {CONFIG_FILE} is missing')
  with open(path) as f:
    config = experiments.Config.from_json(json.load(f))
  overrides = {k: v for k, v in overrides.items() if v is not None and v != config.get(k)}
  if 'ways' in overrides and experiments.get_algorithm(config.algo).fixed_ways:
    raise ValueError(f'this {config.algo} run has a {config.ways}-way classifier head; it cannot be evaluated at '
                     f'{overrides["ways"]} ways')
  experiment = experiments.build(config.replace(**overrides), data_dir)
  like = experiments.initial_state(experiment, abstract=True)
  checkpoints = Checkpoints(os.path.join(run_dir, 'checkpoints'))
  try:
    state = checkpoints.restore(like)
  finally:
    checkpoints.close()
  return experiment, state


def evaluate(args: argparse.Namespace) -> dict:
  from jmeta import experiments
  chosen = [(d, e) for d in experiments.datasets().values() for e in d.evaluations if getattr(args, _dest(e.flag))]
  if len(chosen) > 1:
    raise ValueError(f'choose one of {", ".join(e.flag for _, e in chosen)}')
  protocol = chosen[0] if chosen else None
  if protocol is not None:
    owner, evaluation = protocol
    for k, v in evaluation.fixed.items():
      if getattr(args, k, None) not in (None, v):
        raise ValueError(f'{evaluation.flag} fixes {", ".join(f"{a}={b}" for a, b in evaluation.fixed.items())}; '
                         f'leave out --{" and --".join(evaluation.fixed)}')
      setattr(args, k, v)
  experiment, state = load_run(args.run_dir, args.data_dir, ways=args.ways, shots=args.shots)
  if protocol is not None and experiment.config.dataset != owner.name:
    raise ValueError(f'{evaluation.flag} evaluate an {owner.name} run; this run is on {experiment.config.dataset}')
  inner_steps = experiment.config.get('eval_inner_steps') if args.inner_steps is None else args.inner_steps
  from jmeta.checks import check_positive_int
  if experiment.inner_steps:
    check_positive_int(inner_steps, '--inner-steps', minimum=0)
  check_positive_int(args.episodes, '--episodes')
  if protocol is not None:
    return evaluation.run(experiment, state.params, args.data_dir, inner_steps)
  return _final_record(experiment, _test_scores(experiment, experiment.test_tasks, inner_steps), state.params,
                       episodes=args.episodes, seed=args.seed, inner_steps=inner_steps)


def catalogue() -> dict:
  """What `jmeta list` prints: each algorithm with its family, paper, datasets and published figures, and each
  dataset with its kind."""
  from jmeta import experiments
  algos = [{'name': a.name, 'family': a.family, 'paper': a.paper, 'datasets': list(a.published),
            'options': [o.name for o in a.options],
            'published': [{'dataset': p.dataset, **p.setting, 'metric': p.metric, 'value': p.value,
                           'source': p.source} for p in a.results]}
           for a in experiments.algorithms().values()]
  data = [{'name': d.name, 'kind': d.kind, 'summary': d.summary, 'options': [o.name for o in d.options]}
          for d in experiments.datasets().values()]
  return {'algorithms': algos, 'datasets': data}


def _setting(published: dict) -> str:
  return ' '.join(f'{k}={v}' for k, v in published.items() if k not in ('dataset', 'metric', 'value', 'source'))


def _print_catalogue(catalogue: dict) -> None:
  print('| algorithm | family | paper | datasets | published (setting: value) |\n|---|---|---|---|---|')
  for a in catalogue['algorithms']:
    figures = '; '.join(f"{p['dataset']} {_setting(p)}: {p['value']} {p['metric']}" for p in a['published']) or '-'
    print(f"| {a['name']} | {a['family']} | {a['paper']} | {', '.join(a['datasets'])} | {figures} |")
  print('\n| dataset | kind | what |\n|---|---|---|')
  for d in catalogue['datasets']:
    print(f"| {d['name']} | {d['kind']} | {d['summary']} |")


def main(argv: Sequence[str] | None = None) -> dict | list:
  """Runs a command; prints its result as one JSON line, last (`bench`: its table; `list`: tables). Bad input
  raises `ValueError`."""
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_train(argv[1:]) if argv[:1] == ['train'] else _parser().parse_args(argv)
  if args.command == 'bench':
    from jmeta.bench.run import bench
    return bench(args)
  if args.command == 'list':
    record = catalogue()
    if args.json:
      print(json.dumps(record), flush=True)
    else:
      _print_catalogue(record)
    return record
  record = train(args) if args.command == 'train' else evaluate(args)
  print(json.dumps(record), flush=True)
  return record


def run() -> None:
  """The console script: `main` with errors as one line on stderr (status 2 for bad input, 1 for a diverged
  run); SIGTERM, like Ctrl-C, saves a checkpoint before exiting. glibc's malloc is tuned first (`jmeta.runtime`)."""
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  from jmeta.runtime import tune_malloc
  tune_malloc()
  try:
    main()
  except ValueError as e:
    print(f'jmeta: error: {e}', file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as e:
    print(f'jmeta: {e}', file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    print('jmeta: interrupted; the last checkpoint is saved, continue with --resume', file=sys.stderr)
    sys.exit(130)


if __name__ == '__main__':
  run()
