"""The `jmeta` command: `jmeta train ...`, `jmeta eval DIR ...`, `jmeta bench ...`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from typing import Sequence

CONFIG_FILE = 'config.json'


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='jmeta', description='Meta-learning in JAX.')
  sub = parser.add_subparsers(dest='command', required=True)

  train = sub.add_parser('train', help='meta-train, log metrics, checkpoint, evaluate on fresh test tasks')
  train.add_argument('--algo', required=True, help='maml, fomaml, metasgd, anil, reptile, pretrained, protonet, '
                     'matching, relation or siamese')
  train.add_argument('--dataset', default=None, help='sinusoid (the default) or omniglot')
  train.add_argument('--ways', type=int, help='classes per test episode (omniglot; default 5)')
  train.add_argument('--train-ways', type=int, help='classes per training episode (default: published, else --ways)')
  train.add_argument('--shots', type=int, help='support examples per class (omniglot, default 1) or per task '
                     '(sinusoid, default 10)')
  train.add_argument('--queries', type=int, help='query examples per class (omniglot, default 15) or per task while '
                     'training (sinusoid, default: as many as shots)')
  train.add_argument('--split', help='omniglot split: vinyals (1,200 characters + rotations for training, the '
                     'default) or lake (background / evaluation)')
  train.add_argument('--filters', type=int, help='conv4 filters (omniglot, default 64)')
  train.add_argument('--data-dir', help='where the dataset files are (default: $JMETA_DATA_DIR, else the cache)')
  train.add_argument('--meta-batch', type=int, help='tasks per meta-step (default: published)')
  train.add_argument('--steps', type=int, help='meta-steps in all (default: published)')
  train.add_argument('--inner-steps', type=int, help='inner steps per task while training (default: published)')
  train.add_argument('--eval-inner-steps', type=int, help='inner steps per task at validation and test time '
                     '(default: published, else as --inner-steps)')
  train.add_argument('--inner-lr', type=float, help='inner step size (default: published)')
  train.add_argument('--inner-opt', help='inner optimizer: sgd, adam, or adam0 (Adam with beta1 = 0) (default: '
                     'published, else sgd)')
  train.add_argument('--inner-batch', type=int, help='reptile: examples per inner step while meta-training (default: '
                     'one pass over the task on omniglot, else the whole task)')
  train.add_argument('--outer-lr', type=float, help='outer step size (default: published)')
  train.add_argument('--outer-halve-every', type=int, help='halve the outer step size every this many meta-steps '
                     '(default: published)')
  train.add_argument('--attention-scale', type=float, help='matching: factor of the cosine similarities in the '
                     'attention softmax (default: published; 1 is the paper\'s)')
  scale = train.add_mutually_exclusive_group()
  scale.add_argument('--learn-attention-scale', dest='learn_attention_scale', action='store_true', default=None,
                     help='matching: learn the scale, from --attention-scale (the omniglot default)')
  scale.add_argument('--fixed-attention-scale', dest='learn_attention_scale', action='store_false',
                     default=None, help='matching: keep --attention-scale fixed')
  train.add_argument('--seed', type=int)
  train.add_argument('--log-every', type=int, help='meta-steps per logged record (default 100)')
  train.add_argument('--eval-every', type=int, help='meta-steps between validations (default: a tenth of the run)')
  train.add_argument('--checkpoint-every', type=int, help='meta-steps between checkpoints (default: as eval)')
  train.add_argument('--eval-episodes', type=int, help='test tasks in the final evaluation (default 1000)')
  train.add_argument('--remat', action='store_true', default=None, help='rematerialise inner steps (less memory)')
  train.add_argument('--out', required=True, help='run directory: config, metrics.jsonl, checkpoints')
  train.add_argument('--resume', action='store_true', help='continue the run in --out from its last checkpoint')
  train.add_argument('--time-limit', type=float, help='stop after this many minutes of training (at the next '
                     'logged step), checkpoint, evaluate; --resume goes on')
  train.add_argument('--devices', type=int, help='shard each meta-batch over this many devices (default: one); on '
                     'a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N provides N')
  train.add_argument('--vmap-size', type=int, help='tasks vmapped at once; the meta-batch is mapped over in '
                     'chunks of this many (default: all at once). On a 2-core CPU, 8 made 5-shot MAML 1.6x faster '
                     '(benchmarks/results/vmap_sizes.json)')
  train.add_argument('--no-progress', action='store_true', help='no progress bar')

  ev = sub.add_parser('eval', help='evaluate a trained run on fresh test tasks')
  ev.add_argument('run_dir')
  ev.add_argument('--episodes', type=int, default=1000, help='test tasks (default 1000)')
  ev.add_argument('--seed', type=int, default=0, help='seed of the test tasks (default 0)')
  ev.add_argument('--inner-steps', type=int, help='inner steps at test time (default: the run\'s '
                  'eval-inner-steps)')
  ev.add_argument('--ways', type=int, help='classes per test episode (default: the run\'s own)')
  ev.add_argument('--shots', type=int, help='support examples per class (default: the run\'s own)')
  ev.add_argument('--data-dir', help='where the dataset files are (default: $JMETA_DATA_DIR, else the cache)')
  ev.add_argument('--official-runs', action='store_true', help='omniglot: 20-way one-shot accuracy over the 400 '
                  'trials of the 20 official runs of Lake et al. (2015), from all_runs.zip')

  from jmeta.bench.run import add_arguments
  add_arguments(sub.add_parser('bench', help='time meta-steps of jmeta and PyTorch side by side; JSON and a table'))
  return parser


_CONFIG_FIELDS = ('algo', 'dataset', 'ways', 'train_ways', 'shots', 'queries', 'split', 'filters', 'meta_batch',
                  'steps', 'inner_steps', 'eval_inner_steps', 'inner_lr', 'inner_opt', 'inner_batch', 'outer_lr',
                  'outer_halve_every', 'attention_scale', 'learn_attention_scale', 'seed', 'log_every', 'eval_every',
                  'checkpoint_every', 'eval_episodes', 'remat')


def _train_config(args: argparse.Namespace):
  from jmeta.recipes import Config, resolve
  given = {k: getattr(args, k) for k in _CONFIG_FIELDS if getattr(args, k) is not None}
  path = os.path.join(args.out, CONFIG_FILE)
  if args.resume:
    if not os.path.exists(path):
      raise ValueError(f'--resume: no run to resume in {args.out} (no {CONFIG_FILE})')
    with open(path) as f:
      saved = resolve(Config.from_json(json.load(f)))
    conflicts = {k: (getattr(saved, k), v) for k, v in given.items()
                 if k != 'steps' and getattr(saved, k) != v}
    if conflicts:
      detail = ', '.join(f'{k}: run has {a!r}, given {b!r}' for k, (a, b) in conflicts.items())
      raise ValueError(f'--resume continues the run as it was configured; these arguments differ: {detail}')
    return resolve(dataclasses.replace(saved, steps=given.get('steps', saved.steps)))
  if os.path.exists(path):
    raise ValueError(f'{args.out} already holds a run; pass --resume to continue it or choose another --out')
  return resolve(Config(**given))


def _test_scores(experiment, tasks, inner_steps: int):
  from jmeta.evaluation import evaluator
  from jmeta.recipes import GRADIENT_BASED
  steps = inner_steps if experiment.config.algo in GRADIENT_BASED else None
  return evaluator(experiment.test_learner, tasks, experiment.score, steps=steps)


def _final_record(experiment, scores, params, *, episodes: int, seed: int, inner_steps: int) -> dict:
  from jmeta.evaluation import summarize
  from jmeta.recipes import GRADIENT_BASED, test_key
  c = experiment.config
  summary = summarize(scores(params, test_key(seed), episodes))
  record = {experiment.metric: summary.mean, 'ci95': summary.ci95}
  if c.ways is not None:
    record['ways'] = c.ways
  record.update(episodes=episodes, shots=c.shots)
  if c.algo in GRADIENT_BASED:
    record['inner_steps'] = inner_steps
  return record


def train(args: argparse.Namespace) -> dict:
  config = _train_config(args)
  import jax
  from jmeta import recipes
  from jmeta.evaluation import summarize
  from jmeta.tasks import task_spec
  from jmeta.training import fit
  from jmeta.training.plots import plot_learning_curve

  if args.vmap_size is not None:
    from jmeta.checks import check_positive_int
    check_positive_int(args.vmap_size, '--vmap-size')
  experiment = recipes.build(config, args.data_dir)
  c = experiment.config
  os.makedirs(args.out, exist_ok=True)
  if not args.resume:
    with open(os.path.join(args.out, CONFIG_FILE), 'w') as f:
      json.dump(c.to_json(), f, indent=2)

  keys = recipes.keys(c.seed)
  state = _initial_state(experiment, keys)
  valid = _test_scores(experiment, experiment.valid_tasks, c.eval_inner_steps)

  def eval_fn(params):
    s = summarize(valid(params, keys['valid'], 200))
    return {f'valid_{experiment.metric}': s.mean, 'valid_ci95': s.ci95}

  from jmeta.training.sharding import task_mesh
  mesh = task_mesh(args.devices) if args.devices is not None else None
  time_limit = None
  if args.time_limit is not None:
    from jmeta.checks import check_positive_number
    time_limit = 60 * check_positive_number(args.time_limit, '--time-limit')
  state = fit(experiment.learner, experiment.outer_opt, experiment.train_tasks, state, meta_batch=c.meta_batch,
              steps=c.steps, out_dir=args.out, log_every=c.log_every, checkpoint_every=c.checkpoint_every,
              eval_every=c.eval_every, eval_fn=eval_fn, resume=args.resume, progress=not args.no_progress,
              task_spec=task_spec(experiment.train_tasks(jax.random.PRNGKey(0))), mesh=mesh, time_limit=time_limit,
              vmap_size=args.vmap_size)
  if int(state.step) < c.steps:
    print(f'jmeta: the time limit stopped training at step {int(state.step)} of {c.steps}; the checkpoint is '
          'saved, --resume goes on', file=sys.stderr)
  plot_learning_curve(args.out)
  same = experiment.test_tasks is experiment.valid_tasks
  test = valid if same else _test_scores(experiment, experiment.test_tasks, c.eval_inner_steps)
  return _final_record(experiment, test, state.params, episodes=c.eval_episodes, seed=c.seed,
                       inner_steps=c.eval_inner_steps)


def _initial_state(experiment, keys):
  import jax
  from jmeta.training import init_state
  return jax.jit(lambda k_train, k_model: init_state(
      experiment.learner, experiment.outer_opt, k_train, experiment.init_model(k_model)))(keys['train'], keys['model'])


def load_run(run_dir: str, data_dir: str | None = None, **overrides):
  """The experiment and final state of a run directory written by `jmeta train`.

  `overrides` replace configuration fields for evaluation (e.g. `ways`, `shots`); the checkpoint must still fit.
  """
  from jmeta import recipes
  from jmeta.training import Checkpoints
  path = os.path.join(run_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(f'{run_dir} is not a jmeta run directory: {CONFIG_FILE} is missing')
  with open(path) as f:
    config = recipes.Config.from_json(json.load(f))
  overrides = {k: v for k, v in overrides.items() if v is not None and v != getattr(config, k)}
  if 'ways' in overrides and config.algo in recipes.GRADIENT_BASED:
    raise ValueError(f'this {config.algo} run has a {config.ways}-way classifier head; it cannot be evaluated at '
                     f'{overrides["ways"]} ways')
  experiment = recipes.build(dataclasses.replace(config, **overrides), data_dir)
  like = _initial_state(experiment, recipes.keys(experiment.config.seed))
  checkpoints = Checkpoints(os.path.join(run_dir, 'checkpoints'))
  try:
    state = checkpoints.restore(like)
  finally:
    checkpoints.close()
  return experiment, state


def _official_runs(experiment, params, data_dir: str | None, inner_steps: int) -> dict:
  from jmeta.datasets import omniglot
  from jmeta.evaluation import correct_predictions, summarize
  from jmeta.recipes import GRADIENT_BASED
  kwargs = {'steps': inner_steps} if experiment.config.algo in GRADIENT_BASED else {}
  tasks = omniglot.run_tasks(omniglot.load_runs(data_dir))
  hits = correct_predictions(experiment.test_learner, params, tasks, **kwargs)
  summary = summarize(hits.ravel())
  return {'accuracy': summary.mean, 'ci95': summary.ci95, 'ways': 20, 'shots': 1, 'episodes': hits.shape[0],
          'trials': hits.size, 'protocol': 'lake2015_official_runs'}


def evaluate(args: argparse.Namespace) -> dict:
  if args.official_runs:
    if args.ways not in (None, 20) or args.shots not in (None, 1):
      raise ValueError('--official-runs are 20-way one-shot; leave out --ways and --shots')
    args.ways, args.shots = 20, 1
  experiment, state = load_run(args.run_dir, args.data_dir, ways=args.ways, shots=args.shots)
  if args.official_runs and experiment.config.dataset != 'omniglot':
    raise ValueError(f'--official-runs evaluate an omniglot run; this run is on {experiment.config.dataset}')
  inner_steps = experiment.config.eval_inner_steps if args.inner_steps is None else args.inner_steps
  from jmeta.checks import check_positive_int
  check_positive_int(inner_steps, '--inner-steps', minimum=0)
  check_positive_int(args.episodes, '--episodes')
  if args.official_runs:
    return _official_runs(experiment, state.params, args.data_dir, inner_steps)
  return _final_record(experiment, _test_scores(experiment, experiment.test_tasks, inner_steps), state.params,
                       episodes=args.episodes, seed=args.seed, inner_steps=inner_steps)


def main(argv: Sequence[str] | None = None) -> dict | list:
  """Runs a command; prints its result as one JSON line, last (`bench`: its table). Bad input raises
  `ValueError`."""
  args = _parser().parse_args(argv)
  if args.command == 'bench':
    from jmeta.bench.run import bench
    return bench(args)
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
