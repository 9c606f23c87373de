"""The meta-batch sharded over 4 CPU devices against the same computation on one device.

The device count is fixed when JAX initialises its backend, and this pytest process (and its xdist workers) has
already done so for the other tests; the 4-device runs happen in a subprocess started with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`, which saves its results for the comparisons here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import optax
import pytest

import jmeta
from helpers import meta_batch, mlp_apply, mlp_params, regression_task
from jmeta.training import task_mesh

DEVICES, TASKS, FIT_STEPS = 4, 8, 30
_REPO = Path(__file__).resolve().parents[1]


def _setup():
  """Second-order MAML, its outer optimizer, an initial state and a meta-batch `[TASKS, ...]`."""
  learner = jmeta.maml(mlp_apply, inner_opt=0.1, steps=2)
  outer_opt = optax.adam(1e-3)
  state, batch = jax.jit(lambda: (
      jmeta.init_state(learner, outer_opt, jax.random.PRNGKey(0), mlp_params(jax.random.PRNGKey(1))),
      meta_batch(jax.random.PRNGKey(2), tasks=TASKS)))()
  return learner, outer_opt, state, batch


_WORKER = """
import json, re, sys
import jax, numpy as np
from test_sharding import _setup, DEVICES, TASKS, FIT_STEPS
from helpers import meta_batch, regression_task
import jmeta
from jmeta.training import sharding
from jmeta.training.meta_step import sampled_steps
from jmeta.tasks import as_pytree

out_dir = sys.argv[1]
assert jax.device_count() == DEVICES, jax.devices()
learner, outer_opt, state, batch = _setup()
mesh = sharding.task_mesh(DEVICES)
step = jmeta.meta_step(learner, outer_opt)
info = {}

sharded_batch = sharding.shard_meta_batch(batch, mesh)
info['batch_spec'] = [tuple(a.sharding.spec) for a in jax.tree.leaves(sharded_batch)]
info['batch_shard_rows'] = [sorted(s.data.shape[0] for s in a.addressable_shards)
                            for a in jax.tree.leaves(sharded_batch)]
new, metrics = sharding.sharded_meta_step(step, mesh)(state, batch)
info['state_replicated'] = all(a.sharding.is_fully_replicated and len(a.sharding.device_set) == DEVICES
                               for a in jax.tree.leaves((new, metrics)))

fitted = jmeta.fit(learner, outer_opt, regression_task, state, meta_batch=TASKS, steps=FIT_STEPS,
                   log_every=FIT_STEPS, progress=False, mesh=mesh)
info['fit_replicated'] = all(a.sharding.is_fully_replicated and len(a.sharding.device_set) == DEVICES
                             for a in jax.tree.leaves(fitted))

# fit's own chunk of FIT_STEPS steps: its compiled program is read back from the compilation cache, not rebuilt.
chunk = jax.jit(lambda s, f: sampled_steps(sharding.constrain_step(step, mesh), f, TASKS, FIT_STEPS)(s))
hlo = chunk.lower(*sharding.replicate((state, as_pytree(regression_task)), mesh)).compile().as_text()
info['sampled_rows'] = sorted({int(n) for n in re.findall(r'f32\\[(\\d+),5,1\\]', hlo)})
info['all_reduce'] = 'all-reduce' in hlo

errors = {}
def error(name, f):
  try:
    f()
  except ValueError as e:
    errors[name] = str(e)
error('too_many_devices', lambda: sharding.task_mesh(DEVICES + 4))
six = meta_batch(jax.random.PRNGKey(3), tasks=6)
error('step_indivisible', lambda: sharding.sharded_meta_step(step, mesh)(state, six))
error('fit_indivisible', lambda: jmeta.fit(learner, outer_opt, regression_task, state, meta_batch=6, steps=1,
                                           progress=False, mesh=mesh))
info['errors'] = errors

np.savez(out_dir + '/step.npz', *jax.tree.leaves((new, metrics)))
np.savez(out_dir + '/fit.npz', *jax.tree.leaves(fitted))
print(json.dumps(info))
"""


def _run_four_devices(out):
  """Runs `_WORKER` on 4 CPU devices while computing the same step and fit here, on one device.

  Returns the worker's info dict, its results and the one-device results: `(info, sharded, single)`, the last two
  as `{'step': (state, metrics), 'fit': state}`.
  """
  env = {**os.environ, 'XLA_FLAGS': f'{os.environ.get("XLA_FLAGS", "")} '
                                    f'--xla_force_host_platform_device_count={DEVICES}'.strip(),
         'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': os.pathsep.join([str(_REPO / 'tests'), str(_REPO)])}
  proc = subprocess.Popen([sys.executable, '-c', _WORKER, str(out)], env=env, cwd=_REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    learner, outer_opt, state, batch = _setup()
    single = {'step': jax.jit(jmeta.meta_step(learner, outer_opt))(state, batch),
              'fit': jmeta.fit(learner, outer_opt, regression_task, state, meta_batch=TASKS, steps=FIT_STEPS,
                               log_every=FIT_STEPS, progress=False)}
    stdout, stderr = proc.communicate(timeout=300)
  finally:
    proc.kill()
  assert proc.returncode == 0, stderr[-4000:]
  sharded = {name: _load(out / f'{name}.npz', single[name]) for name in single}
  return json.loads(stdout.strip().splitlines()[-1]), sharded, single


def _load(path, like):
  with np.load(path) as f:
    return jax.tree.unflatten(jax.tree.structure(like), [f[f'arr_{i}'] for i in range(len(f.files))])


def test_four_devices_match_one_device(tmp_path):
  # One test, not one per check: under pytest-xdist a shared fixture would start the 4-device run once per worker.
  info, sharded, single = _run_four_devices(tmp_path)

  chex.assert_trees_all_close(sharded['step'], single['step'], rtol=1e-5, atol=1e-6)
  assert info['state_replicated']
  assert all(spec == ['tasks'] for spec in info['batch_spec']), info['batch_spec']
  assert all(rows == [TASKS // DEVICES] * DEVICES for rows in info['batch_shard_rows']), info['batch_shard_rows']

  assert int(single['fit'].step) == FIT_STEPS
  chex.assert_trees_all_close(sharded['fit'], single['fit'], rtol=1e-5, atol=1e-6)
  assert info['fit_replicated']
  # Inside the scan each device samples and differentiates only its own tasks; the gradients are all-reduced.
  assert info['sampled_rows'] == [TASKS // DEVICES], info['sampled_rows']
  assert info['all_reduce']

  errors = info['errors']
  assert set(errors) == {'too_many_devices', 'step_indivisible', 'fit_indivisible'}, errors
  assert f'XLA_FLAGS=--xla_force_host_platform_device_count={DEVICES + 4}' in errors['too_many_devices']
  for name in ('step_indivisible', 'fit_indivisible'):
    assert '6 tasks' in errors[name] and f'{DEVICES} devices' in errors[name], errors[name]


def test_task_mesh_in_this_process():
  n = jax.device_count()
  assert task_mesh().shape == {'tasks': n}
  assert task_mesh(jax.devices()[:1]).shape == {'tasks': 1}
  with pytest.raises(ValueError, match=f'--xla_force_host_platform_device_count={n + 1}'):
    task_mesh(n + 1)
  with pytest.raises(ValueError, match='at least one device'):
    task_mesh(0)
  with pytest.raises(ValueError, match="axis named 'tasks'"):
    split = jmeta.Split(np.zeros((2, 5, 1)), np.zeros((2, 5, 1)))
    jmeta.training.shard_meta_batch(jmeta.Task(split, split), jax.make_mesh((1,), ('batch',)))
