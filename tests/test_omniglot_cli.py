"""Few-shot classification on real Omniglot through the command line, on a small budget."""

import numpy as np
import pytest

from jmeta import cli
from jmeta.training import read_metrics

pytestmark = pytest.mark.slow  # minute-long end-to-end runs; -m 'not slow' skips them

# Two conv blocks, not the papers' four: a run's programs compile in half the time, and these tests check what a
# run does, not how accurate a full-size model gets (benchmarks/omniglot.py measures that). One block reaches 0.54,
# short of the 0.6 asserted below.
PROTONET_RUN = ['train', '--algo', 'protonet', '--dataset', 'omniglot', '--ways', '5', '--shots', '1', '--train-ways',
                '10', '--queries', '5', '--filters', '16', '--blocks', '2', '--steps', '100', '--log-every', '10',
                '--checkpoint-every', '20', '--outer-halve-every', '50', '--eval-every', '100',
                '--eval-episodes', '100', '--valid-episodes', '20', '--no-progress', '--seed', '5']


def test_protonet_run_trains_evaluates_and_resumes(omniglot_dir, tmp_path):
  """One short run (5-way 1-shot, 100 meta-steps, checkpoints every 20, the step size halved at 50, so a resumed
  run must also resume its schedule) read by every check of a trained run: its record, `jmeta eval` at 20 ways
  and on the official runs, and a twin stopped at step 40 and resumed to 100. Validation (at the end of each of
  the three runs) scores 20 episodes, not the default 200: only its record is checked, and 600 validation episodes
  cost more CPU than all the other evaluations. (A run killed by a signal and resumed is `test_cli.py`'s test on
  sinusoid: the same loop, without two more processes loading Omniglot.)"""
  import chex
  whole = tmp_path / 'whole'
  record = cli.main(PROTONET_RUN + ['--out', str(whole)])
  assert set(record) == {'accuracy', 'ci95', 'ways', 'shots', 'episodes'}
  assert record['ways'] == 5 and record['shots'] == 1 and record['episodes'] == 100
  assert record['accuracy'] > 0.6, record  # chance is 0.2
  assert 'valid_accuracy' in read_metrics(whole)[-1]

  wider = cli.main(['eval', str(whole), '--ways', '20', '--episodes', '20'])
  assert wider['ways'] == 20 and 0.05 * 2 < wider['accuracy'] < record['accuracy']
  runs = cli.main(['eval', str(whole), '--official-runs'])
  assert runs['trials'] == 400 and runs['episodes'] == 20 and runs['ways'] == 20
  assert runs['accuracy'] > 0.2 and runs['ci95'] > 0  # chance is 0.05

  stopped = str(tmp_path / 'stopped')
  steps = PROTONET_RUN.index('--steps') + 1
  cli.main(PROTONET_RUN[:steps] + ['40'] + PROTONET_RUN[steps + 1:] + ['--out', stopped])
  assert [m['step'] for m in read_metrics(stopped)] == list(range(10, 41, 10))
  assert cli.main(PROTONET_RUN + ['--out', stopped, '--resume']) == record
  assert [m['step'] for m in read_metrics(stopped)] == list(range(10, 101, 10))
  chex.assert_trees_all_equal(cli.load_run(stopped)[1], cli.load_run(str(whole))[1])


def test_official_runs_score_a_hand_checkable_learner(omniglot_dir):
  import jax
  import jax.numpy as jnp
  import jmeta
  from jmeta.datasets import omniglot
  from jmeta.evaluation import correct_predictions
  tasks = omniglot.run_tasks(omniglot.load_runs())
  flat = lambda params, x: jnp.reshape(x, (x.shape[0], -1))
  nearest = jmeta.protonet(flat, 20)  # one shot: prototypes are the drawings, so this is pixel nearest neighbour
  hits = correct_predictions(nearest, nearest.init(jax.random.PRNGKey(0), {}), tasks)
  support, query = np.asarray(tasks.support.x).reshape(20, 20, -1), np.asarray(tasks.query.x).reshape(20, 20, -1)
  distances = ((query[:, :, None] - support[:, None]) ** 2).sum(-1)
  np.testing.assert_array_equal(hits, distances.argmin(-1) == np.asarray(tasks.query.y))
  assert 0.1 < hits.mean() < 0.4  # about 0.21 for pixel distance, far below the learned models


def test_gradient_based_learners_need_matching_train_ways(omniglot_dir, tmp_path):
  with pytest.raises(ValueError, match='--train-ways 10 must equal --ways 5'):
    cli.main(['train', '--algo', 'maml', '--dataset', 'omniglot', '--train-ways', '10', '--out', str(tmp_path)])


def test_more_blocks_than_28x28_images_allow_are_refused(omniglot_dir, tmp_path):
  with pytest.raises(ValueError, match='blocks: at most 4 for Omniglot'):
    cli.main(['train', '--algo', 'protonet', '--dataset', 'omniglot', '--blocks', '5', '--out', str(tmp_path)])


# Short runs (16 filters, 60-400 meta-steps) that must reach twice chance (0.2, 5-way 1-shot) on test classes.
# One conv block where that is enough: its programs compile in about half the time of two, and a 1-block meta-step
# costs so little that 2-5x the steps still come out cheaper. Relation Networks keep two (at one, 13x13 maps make
# the relation module slower than the block saved), Siamese networks two (0.25 at one block), first-order MAML four
# (at most 0.42 at one block, 0.34 at two, with up to 400 steps and a 5x outer step). Measured with these settings
# (100 test episodes, 95% intervals +-0.018-0.023): maml 0.459, fomaml 0.529, metasgd 0.486, anil 0.452, reptile
# 0.488, matching 0.589, relation 0.664, siamese 0.442. Meta-SGD's learned steps start small (U[0.005, 0.1]) and
# Reptile learns slowly at its published step sizes, hence their larger ones here.
ONE_BLOCK, TWO_BLOCKS = ['--blocks', '1'], ['--blocks', '2']
SHORT_RUNS = {
    'maml': ['--meta-batch', '4', '--queries', '5', '--steps', '400'] + ONE_BLOCK,
    'fomaml': ['--meta-batch', '4', '--queries', '5', '--steps', '60'],
    'metasgd': ['--meta-batch', '4', '--queries', '5', '--steps', '300', '--outer-lr', '0.003'] + ONE_BLOCK,
    'anil': ['--meta-batch', '4', '--queries', '5', '--steps', '300'] + ONE_BLOCK,
    'reptile': ['--meta-batch', '5', '--steps', '200', '--inner-lr', '0.01', '--eval-inner-steps', '20'] + ONE_BLOCK,
    'matching': ['--queries', '5', '--steps', '100'] + ONE_BLOCK,
    'relation': ['--queries', '5', '--steps', '100'] + TWO_BLOCKS,
    'siamese': ['--queries', '5', '--steps', '200'] + TWO_BLOCKS,
}


@pytest.mark.parametrize('algo', sorted(SHORT_RUNS))
def test_every_algorithm_learns_omniglot_well_above_chance(algo, omniglot_dir, tmp_path):
  # No validation (--valid-episodes 0): the point is the test score, and a validation program costs a compile.
  steps = SHORT_RUNS[algo][SHORT_RUNS[algo].index('--steps') + 1]
  out = tmp_path / algo
  record = cli.main(['train', '--algo', algo, '--dataset', 'omniglot', '--filters', '16', '--log-every', steps,
                     '--valid-episodes', '0', '--eval-episodes', '100', '--no-progress', '--out', str(out)] +
                    SHORT_RUNS[algo])
  assert record['accuracy'] > 0.4, record
  assert not any(k.startswith('valid_') for k in read_metrics(out)[-1])


# A tiny MANN at the 28x28 size the other Omniglot tests preprocess (Santoro et al.'s 20x20 would preprocess the
# zips once more); the run is short: these check what a run records and that it resumes, not what it learns.
MANN_RUN = ['train', '--algo', 'mann', '--dataset', 'omniglot-sequences', '--ways', '3', '--shots', '3',
            '--image-size', '28', '--hidden', '8', '--slots', '8', '--width', '4', '--heads', '1', '--meta-batch', '2',
            '--log-every', '2', '--checkpoint-every', '2', '--valid-episodes', '10', '--eval-episodes', '10',
            '--no-progress']


def test_mann_on_omniglot_sequences_records_accuracy_by_instance_and_resumes(omniglot_dir, tmp_path):
  import chex
  whole = str(tmp_path / 'whole')
  record = cli.main(MANN_RUN + ['--steps', '4', '--out', whole])
  instances = [f'instance_{k}' for k in (1, 2, 3, 4, 5, 10)]
  assert list(record) == (['accuracy', 'ci95'] + instances + [f'{k}_ci95' for k in instances] +
                          ['ways', 'episodes', 'shots'])
  assert record['instance_4'] == record['instance_10'] == 0.0  # 3 shots: no 4th instance
  # Each episode's accuracy is the mean over its 9 steps, 3 at each of the instances 1, 2 and 3.
  assert abs(record['accuracy'] - np.mean([record[k] for k in instances[:3]])) < 1e-6
  assert {'valid_accuracy', 'valid_instance_2'} <= set(read_metrics(whole)[-1])
  assert cli.main(['eval', whole, '--episodes', '10']) == record
  part = str(tmp_path / 'part')
  cli.main(MANN_RUN + ['--steps', '2', '--out', part])
  cli.main(MANN_RUN + ['--steps', '4', '--out', part, '--resume'])
  assert [m['step'] for m in read_metrics(part)] == [2, 4]
  chex.assert_trees_all_equal(cli.load_run(part)[1], cli.load_run(whole)[1])
  with pytest.raises(ValueError, match='mann does not run on omniglot; it runs on omniglot-sequences'):
    cli.main(['train', '--algo', 'mann', '--dataset', 'omniglot', '--out', str(tmp_path / 'x')])
