"""The benchmark scripts run end to end on a tiny budget and write what the README reads."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sinusoid_benchmark_writes_json_and_plot(tmp_path):
  subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'sinusoid.py'), '--steps', '30', '--episodes', '20',
                  '--shots', '5', '--algos', 'maml', 'metasgd', '--max-inner-steps', '2', '--out', str(tmp_path)],
                 check=True, capture_output=True)
  report = json.loads((tmp_path / 'sinusoid.json').read_text())
  assert (tmp_path / 'sinusoid.png').stat().st_size > 0
  assert report['machine']['backend'] == 'cpu' and report['total_seconds'] > 0
  rows = {(r['algo'], r['shots']): r for r in report['results']}
  assert set(rows) == {('maml', 5), ('metasgd', 5)}
  maml = rows['maml', 5]
  assert maml['meta_steps'] == 30 and maml['published_1step'] == 1.13 and maml['train_seconds'] > 0
  assert [p['inner_steps'] for p in maml['curve']] == [0, 1, 2]
  assert all(p['mse'] > 0 and p['ci95'] > 0 and p['diverged_tasks'] == 0 for p in maml['curve'])
  table = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'sinusoid.py'), '--table', '--out', str(tmp_path)],
                         check=True, capture_output=True, text=True).stdout
  assert '| maml | 1 | 1.13 |' in table and f"{maml['curve'][1]['mse']:.3f}" in table
