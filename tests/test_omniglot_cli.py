"""Few-shot classification on real Omniglot through the command line, on a small budget."""

import pytest

from jmeta import cli
from jmeta.training import read_metrics


def test_protonet_trains_and_evaluates_well_above_chance(omniglot_dir, tmp_path):
  out = str(tmp_path / 'protonet')
  record = cli.main(['train', '--algo', 'protonet', '--dataset', 'omniglot', '--ways', '5', '--shots', '1',
                     '--train-ways', '10', '--queries', '5', '--filters', '16', '--steps', '60', '--log-every', '30', '--eval-every', '60',
                     '--eval-episodes', '100', '--no-progress', '--out', out])
  assert set(record) == {'accuracy', 'ci95', 'ways', 'shots', 'episodes'}
  assert record['ways'] == 5 and record['shots'] == 1 and record['episodes'] == 100
  assert record['accuracy'] > 0.6, record  # chance is 0.2
  assert 'valid_accuracy' in read_metrics(out)[-1]
  wider = cli.main(['eval', out, '--ways', '20', '--episodes', '50'])
  assert wider['ways'] == 20 and 0.05 * 2 < wider['accuracy'] < record['accuracy']


def test_gradient_based_learners_need_matching_train_ways(omniglot_dir, tmp_path):
  with pytest.raises(ValueError, match='--train-ways 10 must equal --ways 5'):
    cli.main(['train', '--algo', 'maml', '--dataset', 'omniglot', '--train-ways', '10', '--out', str(tmp_path)])
