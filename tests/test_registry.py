"""The experiment registry: what runs on what, the command line made from it, runs saved before it, and a new
algorithm and dataset registered from outside the package."""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from jmeta import cli, experiments
from jmeta.experiments import registry

RUNS = Path(__file__).parent / 'data' / 'runs_725823e'
SCORES = json.loads((RUNS / 'scores.json').read_text())


def test_every_algorithm_resolves_on_every_dataset_it_declares_with_its_options_only():
  for algo in experiments.algorithms().values():
    assert algo.published, algo.name
    for dataset in algo.published:
      c = experiments.resolve(experiments.Config(algo.name, dataset))
      fields = set(c) - {'algo', 'dataset'}
      expected = {o.name for o in experiments.RUN_OPTIONS + experiments.get_dataset(dataset).options + algo.options}
      assert fields == expected, (algo.name, dataset)
      assert all(o.help for o in algo.options)


def test_published_figures_name_a_dataset_the_algorithm_runs_on():
  for algo in experiments.algorithms().values():
    for p in algo.results:
      assert p.dataset in algo.published and p.source and p.metric in ('mse', 'accuracy %'), (algo.name, p)


def test_list_shows_what_runs_on_what_with_published_figures(capsys):
  record = cli.main(['list'])
  printed = capsys.readouterr().out
  names = [a['name'] for a in record['algorithms']]
  assert names == list(experiments.algorithms())
  protonet = next(a for a in record['algorithms'] if a['name'] == 'protonet')
  assert protonet['datasets'] == ['omniglot', 'mini-imagenet', 'tiered-imagenet', 'cifar-fs', 'fc100']
  assert protonet['family'] == 'metric-based'
  assert {'dataset': 'omniglot', 'ways': 5, 'shots': 1, 'metric': 'accuracy %', 'value': 98.8,
          'source': 'Snell et al. (2017), table 1'} in protonet['published']
  assert '| protonet | metric-based |' in printed and 'omniglot ways=5 shots=1: 98.8 accuracy %' in printed
  assert '| sinusoid | regression |' in printed
  assert cli.main(['list', '--json']) == record and json.loads(capsys.readouterr().out.splitlines()[-1]) == record


def _help(argv, capsys) -> str:
  with pytest.raises(SystemExit) as done:
    cli.main(argv + ['--help'])
  assert done.value.code == 0
  return ' '.join(capsys.readouterr().out.split())  # argparse wraps lines to the terminal: compare words


def test_train_help_lists_the_chosen_algorithm_and_dataset_options_only(capsys):
  reptile = _help(['train', '--algo', 'reptile', '--dataset', 'omniglot'], capsys)
  assert '--inner-batch' in reptile and '--inner-lr' in reptile and '--filters' in reptile
  assert '--attention-scale' not in reptile and '--remat' not in reptile
  matching = _help(['train', '--algo', 'matching', '--dataset', 'omniglot'], capsys)
  assert '--attention-scale' in matching and '--fixed-attention-scale' in matching
  assert '--inner-lr' not in matching and '--inner-batch' not in matching
  maml = _help(['train', '--algo', 'maml'], capsys)
  assert '--remat' in maml and '--eval-queries' in maml and '--filters' not in maml and '--split' not in maml
  assert ('MAML (gradient-based; Finn, Abbeel & Levine, 2017, arXiv:1703.03400). Runs on sinusoid, omniglot, '
          'mini-imagenet.') in maml
  protonet = _help(['train', '--algo', 'protonet'], capsys)  # does not run on sinusoid: shows omniglot's options
  assert '--filters' in protonet and '--eval-queries' in protonet and 'No options of its own.' in protonet
  assert 'Runs on omniglot, mini-imagenet, tiered-imagenet, cifar-fs, fc100.' in protonet
  bare = _help(['train'], capsys)
  assert 'maml, fomaml, anil' in bare and '--algo A [--dataset D] --help' in bare


@pytest.mark.parametrize('argv, message', [
    (['--algo', 'maml', '--inner-batch', '10'], 'inner_batch applies to reptile, not maml'),
    (['--algo', 'protonet', '--dataset', 'omniglot', '--attention-scale', '2'],
     'attention_scale and learn_attention_scale apply to matching networks, not protonet'),
    (['--algo', 'maml', '--filters', '8'],
     'train_ways, filters and blocks apply to cifar-fs, fc100, mini-imagenet, omniglot and tiered-imagenet, '
     'not sinusoid'),
    (['--algo', 'maml', '--max-angle', '8'],
     'labels, image_size, max_angle and max_shift apply to omniglot-sequences, not sinusoid'),
    (['--algo', 'lstm', '--dataset', 'omniglot-sequences', '--slots', '8'],
     'slots, width, .*gamma and learn_strength apply to memory-augmented neural networks, not lstm'),
    (['--algo', 'protonet'], 'protonet does not run on sinusoid; it runs on omniglot'),
    (['--algo', 'maml', '--outer-opt', 'lbfgs'], "unknown outer_opt 'lbfgs'; expected one of sgd, adam, adam0, rmsprop"),
    (['--algo', 'reptile', '--outer-decay', '--outer-halve-every', '10'], 'two schedules; choose one'),
])
def test_an_option_of_another_algorithm_or_dataset_names_its_owner(tmp_path, argv, message):
  with pytest.raises(ValueError, match=message):
    cli.main(['train'] + argv + ['--out', str(tmp_path / 'run')])
  assert not (tmp_path / 'run').exists()


def test_config_round_trips_through_json_and_rejects_unknown_fields():
  c = experiments.resolve(experiments.Config('reptile', 'omniglot', shots=5))
  assert experiments.Config.from_json(json.loads(json.dumps(c.to_json()))) == c
  assert c.replace(shots=1).shots == 1 and c.shots == 5
  with pytest.raises(ValueError, match="unknown field 'colour' for maml on sinusoid"):
    experiments.resolve(experiments.Config('maml', colour='red'))
  with pytest.raises(AttributeError, match="'filters' is not a field of this maml run on sinusoid"):
    experiments.resolve(experiments.Config('maml')).filters


def _copy(name, tmp_path) -> str:
  target = tmp_path / name
  shutil.copytree(RUNS / name, target)
  return str(target)


@pytest.mark.parametrize('name, episodes', [('maml-sinusoid', 100), ('metasgd-sinusoid', 100),
                                            ('anil-sinusoid', 20), ('pretrained-sinusoid', 20)])
def test_sinusoid_runs_saved_before_the_registry_score_the_same(name, episodes, tmp_path):
  assert cli.main(['eval', _copy(name, tmp_path), '--episodes', str(episodes)]) == pytest.approx(SCORES[name])


OMNIGLOT_RUNS = {
    'protonet-omniglot': [[], ['--ways', '10']],
    'maml-omniglot': [[], ['--inner-steps', '0']],
    'matching-omniglot': [[]],
    'relation-omniglot': [[]],
    'siamese-omniglot': [[]],
    'metasgd-omniglot': [[]],
    'reptile-omniglot': [[]],
}


@pytest.mark.parametrize('name', sorted(OMNIGLOT_RUNS))
def test_omniglot_runs_saved_before_the_registry_score_the_same(name, omniglot_dir, tmp_path):
  """Their checkpoints hold the initial (random) weights of each run, so nothing learned from Omniglot is kept in
  the repository; the configs hold every field of the old flat config, used or not."""
  run = _copy(name, tmp_path)
  for extra in OMNIGLOT_RUNS[name]:
    key = ' '.join([name] + extra)
    assert cli.main(['eval', run, '--episodes', '20'] + extra) == pytest.approx(SCORES[key]), key


def test_legacy_configs_resolve_to_the_same_run():
  """A saved config resolves to what the same fields given today resolve to, its unused fields dropped."""
  for path in sorted(RUNS.glob('*/config.json')):
    saved = json.loads(path.read_text())
    c = experiments.resolve(experiments.Config.from_json(saved))
    assert {k: saved[k] for k in c if k in saved and saved[k] is not None} == {
        k: v for k, v in c.items() if k in saved and saved[k] is not None}, path.parent.name
    dropped = set(saved) - set(c)
    assert dropped <= experiments.config.LEGACY_FIELDS, dropped


# A dataset and an algorithm defined outside jmeta: linear regression tasks y = w x, and a learner that fits the
# support set by least squares in closed form (no gradient steps).

def _line_tasks(shots):
  def sample(key):
    kw, kx = jax.random.split(key)
    w = jax.random.normal(kw, ())
    x = jax.random.normal(kx, (2 * shots, 1))
    return _task(x, w * x, shots)
  return sample


def _task(x, y, shots):
  from jmeta.tasks import Split, Task
  return Task(Split(x[:shots], y[:shots]), Split(x[shots:], y[shots:]))


def _least_squares(c, data):
  from jmeta import MetaLearner, losses

  def adapt(params, support):
    x, y = support.x[:, 0], support.y[:, 0]
    return (params['prior'] + jnp.sum(x * y)) / (1.0 + jnp.sum(x * x))

  def predict(w, x):
    return w * x

  def loss(params, task):
    value = losses.mse(predict(adapt(params, task.support), task.query.x), task.query.y)
    return value, {'loss': value}

  learner = MetaLearner(lambda key, model_params: {'prior': jnp.zeros(())}, adapt, predict, loss,
                        jax.grad(loss, has_aux=True))
  return experiments.Recipe(lambda key: {}, learner, learner)


@pytest.fixture
def outside_entries(monkeypatch):
  monkeypatch.setattr(registry, '_ALGORITHMS', dict(experiments.algorithms()))
  monkeypatch.setattr(registry, '_DATASETS', dict(experiments.datasets()))
  experiments.register_dataset(experiments.Dataset(
      name='lines', kind='regression', summary='y = w x, w ~ N(0, 1)',
      options=(experiments.Option('shots', 'support points per task'),), defaults={'shots': 4},
      load=lambda c, data_dir: experiments.Data(
          _line_tasks(c.shots), _line_tasks(c.shots), _line_tasks(c.shots), model=None,
          example_x=jnp.zeros((2, 1)), loss_fn=None, metrics_fn=None, score=lambda p, y: jnp.mean((p - y) ** 2),
          metric='mse')))
  experiments.register_algorithm(experiments.Algorithm(
      name='lstsq', family='closed-form', title='ridge least squares', paper='-', options=(),
      published={'lines': dict(meta_batch=4, steps=20, outer_lr=0.1, outer_opt='sgd')}, build=_least_squares))


def test_an_algorithm_and_a_dataset_registered_outside_run_from_the_command_line(outside_entries, tmp_path, capsys):
  with pytest.raises(ValueError, match='a dataset named .lines. is already registered'):
    experiments.register_dataset(experiments.get_dataset('lines'))
  record = cli.main(['train', '--algo', 'lstsq', '--dataset', 'lines', '--shots', '8', '--log-every', '10',
                     '--eval-episodes', '50', '--no-progress', '--out', str(tmp_path / 'run')])
  assert set(record) == {'mse', 'ci95', 'episodes', 'shots'} and record['shots'] == 8
  # Ridge regression towards a prior of ~0 on noiseless lines is close to exact: far below the variance of y.
  assert record['mse'] < 0.1
  assert cli.main(['eval', str(tmp_path / 'run'), '--episodes', '50']) == record
  assert 'lstsq' in [a['name'] for a in cli.main(['list', '--json'])['algorithms']]
