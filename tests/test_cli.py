"""The `jmeta` command line: train, eval, bad names, and resuming a killed run."""

import json
import os
import subprocess
import sys

import chex
import numpy as np
import pytest

from jmeta import cli
from jmeta.training import read_metrics
from helpers import kill_after_checkpoint

JMETA = [sys.executable, '-m', 'jmeta.cli']
SMALL = ['--dataset', 'sinusoid', '--meta-batch', '4', '--no-progress']


def _episodes(n) -> list:
  """`--eval-episodes n` and as many validation episodes, not the default 200 at each of a run's validations."""
  return ['--eval-episodes', str(n), '--valid-episodes', str(n)]


def _last_json(stdout: str) -> dict:
  return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('argv, message', [
    (['train', '--algo', 'mamll', '--out', 'x'], "unknown algorithm 'mamll'; expected one of maml, fomaml"),
    (['train', '--algo', 'maml', '--dataset', 'mnist', '--out', 'x'], "unknown dataset 'mnist'"),
    (['train', '--algo', 'maml', '--inner-lr', '-1', '--out', 'x'], 'inner_lr must be a positive finite number'),
    (['train', '--algo', 'maml', '--outer-lr', 'nan', '--out', 'x'], 'outer_lr must be a positive finite number'),
    (['train', '--algo', 'reptile', '--inner-steps', '0', '--out', 'x'], 'inner_steps must be an integer >= 1'),
])
def test_bad_arguments_raise_value_error_naming_the_problem(tmp_path, argv, message):
  argv = [a if a != 'x' else str(tmp_path / 'run') for a in argv]
  with pytest.raises(ValueError, match=message):
    cli.main(argv)


def test_console_script_reports_errors_on_one_line_with_status_2(tmp_path):
  out = subprocess.run(JMETA + ['train', '--algo', 'nope', '--out', str(tmp_path)], capture_output=True, text=True)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith("jmeta: error: unknown algorithm 'nope'")


@pytest.mark.parametrize('algo', ['maml', 'fomaml', 'metasgd', 'anil', 'reptile', 'pretrained'])
def test_train_then_eval(tmp_path, algo, capsys):
  out = tmp_path / algo
  record = cli.main(['train', '--algo', algo, '--steps', '200', '--log-every', '50', '--out', str(out)] +
                    _episodes(100) + SMALL)
  printed = _last_json(capsys.readouterr().out)
  assert printed == record and set(record) == {'mse', 'ci95', 'episodes', 'shots', 'inner_steps'}
  assert record['episodes'] == 100 and record['shots'] == 10 and record['mse'] > 0
  metrics = read_metrics(out)
  assert [m['step'] for m in metrics] == [50, 100, 150, 200] and all('loss' in m for m in metrics)
  assert os.path.isdir(out / 'checkpoints' / '200') and (out / 'learning_curve.png').exists()

  again = cli.main(['eval', str(out), '--episodes', '100'])
  assert again == record  # same seed, same test tasks, same figure
  zero = cli.main(['eval', str(out), '--episodes', '100', '--inner-steps', '0', '--seed', '1'])
  assert zero['inner_steps'] == 0 and zero['mse'] != record['mse']


def test_existing_run_needs_resume_and_resume_keeps_the_configuration(tmp_path):
  out = str(tmp_path / 'run')
  cli.main(['train', '--algo', 'maml', '--steps', '100', '--out', out] + _episodes(10) + SMALL)
  with pytest.raises(ValueError, match='already holds a run; pass --resume'):
    cli.main(['train', '--algo', 'maml', '--steps', '100', '--out', out] + SMALL)
  with pytest.raises(ValueError, match="inner_lr: run has 0.01, given 0.5"):
    cli.main(['train', '--algo', 'maml', '--inner-lr', '0.5', '--resume', '--out', out] + SMALL)
  with pytest.raises(ValueError, match='no run to resume'):
    cli.main(['train', '--algo', 'maml', '--resume', '--out', str(tmp_path / 'none')] + SMALL)


def _final_params(run_dir):
  return cli.load_run(str(run_dir))[1]


@pytest.mark.slow
def test_run_killed_and_resumed_ends_with_the_same_parameters(tmp_path):
  args = ['train', '--algo', 'maml', '--steps', '3000', '--log-every', '100', '--checkpoint-every', '300',
          '--seed', '3'] + _episodes(50) + SMALL
  whole, killed = tmp_path / 'whole', tmp_path / 'killed'
  whole_record = cli.main(args + ['--out', str(whole)])  # in this process: only the killed run needs its own

  kill_after_checkpoint(JMETA + args + ['--out', str(killed)], killed, 300)
  steps = [m['step'] for m in read_metrics(killed)]
  assert steps and steps[-1] < 3000, 'the run finished before it could be killed'

  resumed = subprocess.run(JMETA + args + ['--out', str(killed), '--resume'], check=True, capture_output=True,
                           text=True)
  assert [m['step'] for m in read_metrics(killed)] == list(range(100, 3001, 100))
  chex.assert_trees_all_equal(_final_params(killed), _final_params(whole))
  assert _last_json(resumed.stdout) == whole_record
  assert cli.main(['eval', str(whole), '--episodes', '50', '--seed', '3']) == whole_record


@pytest.mark.slow
def test_interrupt_saves_a_checkpoint_and_resume_continues(tmp_path, monkeypatch):
  import jmeta.training.loop as loop
  out = str(tmp_path / 'run')
  calls = {'n': 0}
  original = loop.json.dumps

  def interrupt_on_third_record(obj, *a, **k):
    if isinstance(obj, dict) and 'elapsed_s' in obj:
      calls['n'] += 1
      if calls['n'] == 3:
        raise KeyboardInterrupt
    return original(obj, *a, **k)

  monkeypatch.setattr(loop.json, 'dumps', interrupt_on_third_record)
  args = (['train', '--algo', 'metasgd', '--steps', '500', '--log-every', '50', '--checkpoint-every', '250'] +
          _episodes(10) + ['--out', out] + SMALL)
  with pytest.raises(KeyboardInterrupt):
    cli.main(args)
  monkeypatch.setattr(loop.json, 'dumps', original)
  from jmeta.training import Checkpoints
  assert Checkpoints(os.path.join(out, 'checkpoints')).latest_step() == 150  # saved on interrupt
  cli.main(args + ['--resume'])
  whole = str(tmp_path / 'whole')
  cli.main(args[:-len(SMALL) - 1] + [whole] + SMALL)
  chex.assert_trees_all_equal(_final_params(out), _final_params(whole))


def test_divergence_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
  out = str(tmp_path / 'run')
  args = ['train', '--algo', 'maml', '--inner-lr', '1e30', '--steps', '400', '--log-every', '50',
          '--checkpoint-every', '50', '--out', out] + SMALL
  with pytest.raises(FloatingPointError, match='meta-training diverged: the loss is (nan|inf)'):
    cli.main(args)
  from jmeta.training import Checkpoints
  latest = Checkpoints(os.path.join(out, 'checkpoints')).latest_step()
  assert latest is None or all(m['step'] <= latest and np.isfinite(m['loss']) for m in read_metrics(out))


@pytest.mark.slow
def test_devices_flag_shards_the_meta_batch_and_matches_one_device(tmp_path):
  args = ['train', '--algo', 'maml', '--steps', '200', '--log-every', '100', '--meta-batch', '4',
          '--no-progress'] + _episodes(20)
  env = {**os.environ, 'XLA_FLAGS': f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count=2'}
  subprocess.run(JMETA + args + ['--devices', '2', '--out', str(tmp_path / 'two')], check=True, env=env,
                 capture_output=True)
  cli.main(args + ['--out', str(tmp_path / 'one')])
  chex.assert_trees_all_close(_final_params(tmp_path / 'two').params, _final_params(tmp_path / 'one').params,
                              rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='xla_force_host_platform_device_count'):
    cli.main(args + ['--devices', '64', '--out', str(tmp_path / 'many')])


def test_vmap_size_maps_over_chunks_of_tasks_and_matches_one_vmap(tmp_path):
  args = ['train', '--algo', 'maml', '--steps', '200', '--log-every', '100', '--meta-batch', '4',
          '--no-progress'] + _episodes(20)
  cli.main(args + ['--vmap-size', '3', '--out', str(tmp_path / 'chunks')])  # a chunk of 3, then one of 1
  cli.main(args + ['--out', str(tmp_path / 'one')])
  chex.assert_trees_all_close(_final_params(tmp_path / 'chunks').params, _final_params(tmp_path / 'one').params,
                              rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='--vmap-size must be an integer >= 1'):
    cli.main(args + ['--vmap-size', '0', '--out', str(tmp_path / 'zero')])
  assert not (tmp_path / 'zero').exists()  # rejected before the run directory is made


@pytest.mark.slow
def test_time_limit_stops_at_a_checkpoint_and_resume_finishes(tmp_path, capsys, monkeypatch):
  out = str(tmp_path / 'run')
  base = ['train', '--algo', 'fomaml', '--steps', '300', '--log-every', '100'] + _episodes(20) + SMALL
  args = base + ['--out', out]
  stopped = cli.main(args + ['--time-limit', '1e-6'])
  printed = capsys.readouterr()
  assert 'stopped training at step 100 of 300' in printed.err
  assert 'mse' in stopped and _last_json(printed.out) == stopped and [m['step'] for m in read_metrics(out)] == [100]
  from jmeta import experiments
  made, original = [], experiments.initial_state
  monkeypatch.setattr(experiments, 'initial_state', lambda e, abstract=False: made.append(abstract) or
                      original(e, abstract=abstract))
  cli.main(args + ['--resume'])
  assert made == [True]  # restored into the state's shapes: its initialisation is neither compiled nor run
  monkeypatch.undo()
  assert [m['step'] for m in read_metrics(out)] == [100, 200, 300]
  whole = str(tmp_path / 'whole')
  cli.main(base + ['--out', whole])
  chex.assert_trees_all_equal(_final_params(out), _final_params(whole))
  with pytest.raises(ValueError, match='--time-limit must be a positive finite number'):
    cli.main(base + ['--out', str(tmp_path / 'x'), '--time-limit', '-5'])
