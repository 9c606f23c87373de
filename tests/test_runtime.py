"""Process-level settings of `jmeta.runtime`: when the compile flags are set, and that XLA accepts them."""

import os
import subprocess
import sys

import pytest

from jmeta import runtime

FLAGS = ['--xla_backend_optimization_level=1', '--xla_cpu_use_fusion_emitters=false']


def test_a_fresh_process_gets_the_flags_and_xla_accepts_them():
  # XLA aborts the process on a flag it does not know, so a computation after the call is the check.
  code = ('import os; from jmeta.runtime import tune_xla_compile; added = tune_xla_compile(); '
          'import jax.numpy as jnp; print(added, float(jnp.arange(4.0).sum()), os.environ["XLA_FLAGS"])')
  env = {k: v for k, v in os.environ.items() if k not in ('JAX_PLATFORMS', 'JMETA_XLA_OPT')}
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
  done = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert done.stdout.split() == ['True', '6.0', '--xla_force_host_platform_device_count=2', *FLAGS]


def test_a_flag_the_user_set_keeps_its_value(monkeypatch):
  for name in ('JMETA_XLA_OPT', 'JAX_PLATFORMS'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level=3')
  monkeypatch.setattr('jax._src.xla_bridge.backends_are_initialized', lambda: False)  # as in a fresh process
  assert runtime.tune_xla_compile() is True
  assert os.environ['XLA_FLAGS'] == '--xla_backend_optimization_level=3 --xla_cpu_use_fusion_emitters=false'


@pytest.mark.parametrize('env, expected_flags', [
    ({'XLA_FLAGS': '--xla_backend_optimization_level=2 --xla_cpu_use_fusion_emitters=true'},  # the user's own
     '--xla_backend_optimization_level=2 --xla_cpu_use_fusion_emitters=true'),
    ({'JMETA_XLA_OPT': 'default'}, None),  # turned off
    ({'JAX_PLATFORMS': 'tpu'}, None),  # another backend: unmeasured, left alone
])
def test_the_flags_are_left_out(monkeypatch, env, expected_flags):
  for name in ('XLA_FLAGS', 'JMETA_XLA_OPT', 'JAX_PLATFORMS'):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  monkeypatch.setattr('jax._src.xla_bridge.backends_are_initialized', lambda: False)  # as in a fresh process
  assert runtime.tune_xla_compile() is False
  assert os.environ.get('XLA_FLAGS') == expected_flags


def test_too_late_once_the_backend_has_started(monkeypatch):
  import jax.numpy as jnp
  jnp.zeros(1).block_until_ready()  # starts the backend, if no test before did
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  monkeypatch.delenv('JMETA_XLA_OPT', raising=False)
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  assert runtime.tune_xla_compile() is False and 'XLA_FLAGS' not in os.environ
