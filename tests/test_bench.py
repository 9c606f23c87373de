"""`jmeta bench`: the PyTorch implementations compute jmeta's meta-loss and meta-gradient (float64), and the
command writes records with their fields and prints its table last."""

import dataclasses
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax import lax

torch = pytest.importorskip('torch', reason='the bench extra (PyTorch) is part of the dev install')

from jmeta import cli  # noqa: E402
from jmeta.bench import cases, jax_impl, torch_impl  # noqa: E402


def small(name):
  # Two conv blocks of four filters: the same code in every implementation as four blocks (a loop over them), in
  # half the compile time of the float64 reference.
  return dataclasses.replace(cases.quick(cases.CASES[name]), filters=4, blocks=2) if name != 'maml2_sinusoid' else \
      cases.quick(cases.CASES[name])


@pytest.mark.parametrize('name', list(cases.CASES))
def test_torch_computes_the_same_meta_loss_and_gradient(name):
  case = small(name)
  data = cases.batch(case, seed=1, dtype=np.float64)
  with jax.enable_x64():
    params = jax.tree.map(lambda a: a.astype(np.float64), jax_impl.init_params(case, data, seed=1))
    loss, grads = jax_impl.meta_loss_and_grad(case, params, data)
  expected = {k: v.numpy() for k, v in torch_impl.load(case, grads, torch.float64).items()}
  # Relative to the gradient's scale: the convolution biases before BatchNorm have gradients that are zero up to
  # rounding, so a per-tensor relative error would compare rounding noise.
  scale = max(np.abs(g).max() for g in expected.values())
  for impl in torch_impl.impls(case):  # each PyTorch implementation against one jmeta reference
    torch_loss, torch_grads = torch_impl.meta_loss_and_grad(case, impl, params, data)
    assert abs(torch_loss - loss) <= 1e-12 * abs(loss), impl
    assert set(torch_grads) == set(expected), impl
    for k in expected:
      np.testing.assert_allclose(torch_grads[k], expected[k], rtol=0, atol=1e-10 * scale, err_msg=f'{impl} {k}')


@pytest.mark.parametrize('size, stride', [(28, 2), (14, 2), (7, 2), (4, 2), (28, 1), (5, 1)])
def test_torch_encoders_pad_as_flax_same(size, stride):
  (expected,) = lax.padtype_to_pads((size,), (3,), (stride,), 'SAME')
  assert torch_impl._same_pads(size, stride) == tuple(expected)


@pytest.mark.slow
def test_bench_command_writes_records_and_prints_the_table_last(tmp_path):
  out = tmp_path / 'bench.json'
  # One JAX and one PyTorch implementation: the others write their records through the same code.
  done = subprocess.run([sys.executable, '-m', 'jmeta.cli', 'bench', '--quick', '--case', 'maml2_sinusoid',
                         '--impl', 'jmeta', 'torch_func', '--steps', '2', '--vmap-size', '3', '--json', str(out)],
                        check=True, capture_output=True, text=True)
  records = json.loads(out.read_text())
  pairs = {(r['case'], r['impl']) for r in records}
  assert pairs == {('maml2_sinusoid', i) for i in ('jmeta', 'torch_func')}
  for r in records:
    assert 'error' not in r, r
    assert r['median_ms'] > 0 and r['peak_mb'] > 0 and r['tasks_per_s'] > 0 and r['steps'] == 2
    assert (r['compile_s'] is None) == r['impl'].startswith('torch')
    assert r['model_flops'] > 0 and 0 < r['matmul_fraction'] and r['matmul_gflops']['best'] > 0
    assert r['malloc'] == 'tuned' and r['quick'] is True
    assert r['config']['meta_batch'] == 4 and r['config']['vmap_size'] == 3  # a chunk of 3 and one of 1
  jmeta = next(r for r in records if r['impl'] == 'jmeta' and r['case'] == 'maml2_sinusoid')
  assert jmeta['compile_s'] > 0 and jmeta['xla_flops'] > 0 and jmeta['xla_memory_mb'] > 0
  lines = done.stdout.strip().splitlines()
  assert lines[-1].startswith('| maml2_sinusoid | torch_func |') and lines[-4].startswith('| case | impl |')


def test_bench_rejects_an_unknown_case(monkeypatch, capsys):
  # In this process, through the console script's entry point (its exit status and stderr line), without its
  # process-wide settings: SIGTERM's handler and glibc's malloc tuning.
  monkeypatch.setattr(cli.signal, 'signal', lambda *_: None)
  monkeypatch.setenv('JMETA_MALLOC', 'default')

  def exit_status(*argv):
    monkeypatch.setattr(sys, 'argv', ['jmeta', *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
      cli.run()
    return done.value.code, capsys.readouterr().err

  code, stderr = exit_status('bench', '--case', 'nope')
  assert code == 2 and 'invalid choice' in stderr
  code, stderr = exit_status('bench', '--vmap-size', '0')
  assert code not in (0, None) and '--vmap-size must be an integer >= 1; got 0' in stderr
