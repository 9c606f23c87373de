"""The benchmark scripts run end to end on a tiny budget and write what the README reads."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / 'benchmarks'
pytestmark = pytest.mark.slow  # minute-long end-to-end runs; -m 'not slow' skips them


@pytest.fixture
def script(monkeypatch, capsys):
  """`script(name, *argv)`: runs `benchmarks/<name>.py`'s main with `argv` in this process, as `python
  benchmarks/<name>.py argv` would, and returns what it printed. In-process: no fresh `import jax` and jmeta."""
  monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import benchmarks/report.py as `report`

  def run(name: str, *argv: str) -> str:
    module = sys.modules.get(f'benchmarks_{name}')
    if module is None:
      spec = importlib.util.spec_from_file_location(f'benchmarks_{name}', BENCHMARKS / f'{name}.py')
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      sys.modules[spec.name] = module
    capsys.readouterr()
    monkeypatch.setattr(sys, 'argv', [str(BENCHMARKS / f'{name}.py'), *argv])
    module.main()
    return capsys.readouterr().out

  return run


def test_sinusoid_benchmark_writes_json_and_plot(script, tmp_path):
  script('sinusoid', '--steps', '30', '--episodes', '20', '--shots', '5', '--algos', 'maml', 'metasgd',
         '--max-inner-steps', '2', '--out', str(tmp_path))
  report = json.loads((tmp_path / 'sinusoid.json').read_text())
  assert (tmp_path / 'sinusoid.png').stat().st_size > 0
  assert report['machine']['backend'] == 'cpu' and report['total_seconds'] > 0
  rows = {(r['algo'], r['shots']): r for r in report['results']}
  assert set(rows) == {('maml', 5), ('metasgd', 5)}
  maml = rows['maml', 5]
  assert maml['meta_steps'] == 30 and maml['published_1step'] == 1.13 and maml['train_seconds'] > 0
  assert [p['inner_steps'] for p in maml['curve']] == [0, 1, 2]
  assert all(p['mse'] > 0 and p['ci95'] > 0 and p['diverged_tasks'] == 0 for p in maml['curve'])
  table = script('sinusoid', '--table', '--out', str(tmp_path))
  assert '| maml | 1 | 1.13 |' in table and f"{maml['curve'][1]['mse']:.3f}" in table


def test_omniglot_harness_runs_a_quick_row_and_prints_its_table(omniglot_dir, script, tmp_path):
  script('omniglot', '--quick', '--rows', 'protonet-5w1s', '--runs', str(tmp_path / 'runs'), '--out', str(tmp_path))
  report = json.loads((tmp_path / 'omniglot.json').read_text())
  (row,) = report['results']
  assert 'error' not in row, row
  assert row['published'] == 98.8 and row['meta_steps'] == 10 and 0 <= row['accuracy'] <= 1
  assert row['command'].startswith('jmeta train --algo protonet --dataset omniglot --ways 5 --shots 1')
  table = script('omniglot', '--table', '--out', str(tmp_path))
  assert '| protonet | 5 | 1 | 98.8 |' in table


def test_profile_apportions_a_quick_step_among_kinds_of_instruction(tmp_path):
  # A process of its own: the script sets XLA_FLAGS (per-instruction trace events) before JAX starts.
  out = tmp_path / 'profile.json'
  printed = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'profile_step.py'), '--quick', '--case',
                            'maml2_omniglot_5w1s', '--steps', '2', '--json', str(out)],
                           check=True, capture_output=True, text=True).stdout
  (report,) = json.loads(out.read_text())
  kinds = report['by_kind_ms']
  assert report['case'] == 'maml2_omniglot_5w1s' and report['untraced_ms'] > 0
  assert abs(sum(kinds.values()) - report['events_ms']) < 1e-6 * max(1, report['events_ms'])
  assert kinds['matmul'] > 0 and kinds['patches (slice, pad, concatenate)'] > 0  # jmeta.nn.Conv's two halves
  assert report['top'] and all(t['hlo'] for t in report['top'])
  assert '| matmul |' in printed


def test_speed_tables_and_scaling_plot_from_the_committed_results(script, tmp_path):
  results = ROOT / 'benchmarks' / 'results'
  printed = script('speed', '--table')
  speed = json.loads((results / 'speed.json').read_text())
  scaling = json.loads((results / 'scaling.json').read_text())
  sizes = json.loads((results / 'vmap_sizes.json').read_text())
  chunked = scaling['by_meta_batch_chunked'][-1]
  assert f"| {speed[0]['case']} | {speed[0]['impl']} | {speed[0]['median_ms']:.1f} |" in printed
  assert f"| {chunked['meta_batch']} | jmeta, vmap_size {chunked['vmap_size']} | {chunked['median_ms']:.0f} |" in printed
  assert f"| {sizes[0]['case']} | {sizes[0]['vmap_size']} | {sizes[0]['median_ms']:.0f} |" in printed
  sys.modules['benchmarks_speed'].plot_scaling(scaling, str(tmp_path / 'scaling.png'))
  assert (tmp_path / 'scaling.png').stat().st_size > 10_000


def test_imaml_benchmark_quick_memory_rows_write_json_plot_and_table(script, tmp_path):
  # The memory rows only: the Omniglot mode runs `jmeta train --algo imaml`, which tests/test_imaml.py runs on
  # sinusoid, and a conv4 iMAML program compiled in a fresh process would add most of a minute here.
  script('imaml', '--quick', '--memory', '--out', str(tmp_path))
  report = json.loads((tmp_path / 'imaml.json').read_text())
  rows = {r['row']: r for r in report['results']}
  assert (tmp_path / 'imaml.png').stat().st_size > 0 and report['quick']
  assert {f'memory-{m}-2' for m in ('imaml', 'maml', 'maml-remat')} == set(rows)
  assert all(r['xla_mb'] > 0 and r['rss_mb'] > r['rss_base_mb'] > 0 and r['matmul_gflops_before'] > 0
             for r in rows.values())
  table = script('imaml', '--table', '--out', str(tmp_path))
  assert f"| imaml | 2 | {rows['memory-imaml-2']['xla_mb']:.1f} |" in table


def test_probabilistic_benchmark_quick_writes_json_plot_and_table(script, tmp_path):
  script('probabilistic', '--quick', '--quick-steps', '5', '--out', str(tmp_path))
  report = json.loads((tmp_path / 'probabilistic.json').read_text())
  assert (tmp_path / 'probabilistic.png').stat().st_size > 0
  assert report['quick'] and report['machine']['matmul_gflops_before'] > 0 < report['machine']['matmul_gflops_after']
  assert set(report['results']) == {'maml', 'maml-gaussian', 'platipus'}
  for row in report['results'].values():
    assert row['meta_steps'] == 5 and 0 <= row['scores']['coverage']['mean'] <= 1
    assert row['scores']['log_likelihood']['mean'] < 0 < row['scores']['mse']['mean']
  assert report['results']['maml']['fitted_noise'] > 0
  table = script('probabilistic', '--table', '--out', str(tmp_path))
  assert '| platipus | 5 |' in table


def test_meta_rl_quick_writes_rows_and_plot(script, tmp_path):
  script('meta_rl', '--quick', '--out', str(tmp_path))
  report = json.loads((tmp_path / 'meta_rl.json').read_text())
  rows = {r['policy']: r for r in report['results']}
  assert set(rows) == {'random', 'greedy', 'epsilon_greedy', 'gittins', 'rl2'}
  assert (tmp_path / 'meta_rl.png').is_file()
  assert rows['rl2']['steps'] == 4 and report['matmul_gflops_before'] > 0 and report['matmul_gflops_after'] > 0
  assert all(0 <= r['reward'] <= 5 and len(r['per_pull']) == 5 and r['tasks'] == 20 for r in rows.values())


def test_maml_rl_quick_writes_rows_and_plot(script, tmp_path):
  script('maml_rl', '--quick', '--out', str(tmp_path))
  report = json.loads((tmp_path / 'maml_rl.json').read_text())
  rows = {r['method']: r for r in report['results']}
  assert set(rows) == {'maml', 'pretrained', 'random', 'oracle'} and (tmp_path / 'maml_rl.png').is_file()
  assert rows['maml']['steps'] == 2 and rows['maml']['paper'] == [-40.41, -11.68, -3.33, -3.23]
  assert all(len(r['returns']) == 4 and r['goals'] == 3 and max(r['returns']) < 0 for r in rows.values())
  assert report['matmul_gflops_before'] > 0 and report['matmul_gflops_after'] > 0
  table = script('maml_rl', '--table', '--out', str(tmp_path))
  assert '| maml |' in table and '-11.68' in table


def test_learned_optimizers_quick_writes_curves_tuning_and_plot(script, tmp_path):
  script('learned_optimizers', '--quick', '--out', str(tmp_path))
  report = json.loads((tmp_path / 'learned_optimizers.json').read_text())
  assert (tmp_path / 'learned_optimizers.png').is_file() and report['quick']
  assert report['machine']['matmul_gflops_before']['best'] > 0 and report['machine']['matmul_gflops_after']['best'] > 0
  assert report['training']['lopt_lstm']['meta_steps'] == 4 and report['training']['lopt_mlp']['meta_steps'] == 4
  assert set(report['results']) == {'quadratic', 'digits'}
  for family in report['results'].values():
    assert set(family['20']) == {'lopt_lstm', 'lopt_mlp', 'adam', 'rmsprop', 'sgd_momentum'}
    assert all(len(r['mean_curve']) == 21 for r in family['20'].values())
  assert all(t['20']['adam']['best_lr'] in report['grid'] for t in report['tuning'].values())
  assert set(report['paired']) == {'quadratic/20', 'digits/20'}
  pair = report['paired']['quadratic/20']['lopt_lstm vs adam']
  assert pair['tasks'] + pair['left_out'] == 4 and 0 <= pair['lower_on'] <= pair['tasks']
  table = script('learned_optimizers', '--table', '--out', str(tmp_path))
  assert '| quadratic | 20 |' in table and '| quadratic/20 | lopt_lstm vs adam |' in table

  bench = sys.modules['benchmarks_learned_optimizers']
  assert bench.sign_test(0, 5) == 2 / 32 and bench.sign_test(5, 5) == 2 / 32  # all 5 one way: 2 * (1/2)^5
  assert bench.sign_test(1, 6) == 2 * (1 + 6) / 64 and bench.sign_test(2, 4) == 1.0
  got = bench.paired(np.array([1.0, 2.0, 4.0, np.inf]), np.array([2.0, 2.0, 2.0, 1.0]))
  assert got['mean_log_ratio'] == 0.0 and got['median_ratio'] == 1.0 and got['ci95'] > 0
  assert (got['lower_on'], got['tasks'], got['ties'], got['left_out'], got['sign_test_p']) == (1, 3, 1, 1, 1.0)


def test_compile_level_compares_settings_in_fresh_processes(script, tmp_path):
  table = script('compile_level', '--rounds', '1', '--settings', 'O3', 'O1-legacy', '--cases', '--out', str(tmp_path))
  report = json.loads((tmp_path / 'compile_level.json').read_text())
  assert [(r['setting'], r['xla_flags']) for r in report['runs']] == [
      ('O3', ''), ('O1-legacy', '--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false')]
  assert all(r['rows'][0]['program'] == 'conv4_init' and r['rows'][0]['compile_s'] > 0 for r in report['runs'])
  assert '| conv4_init | O1-legacy |' in table and report['matmul_gflops_after']['best'] > 0
