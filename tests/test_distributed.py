"""Meta-training over two processes (`jax.distributed`, Gloo collectives on CPU) against one process on one device.

Two local processes with two CPU devices each form a 4-device mesh. Each runs (a) `fit` on the global mesh, two
steps with a checkpoint, then resumed to three, and (b) three steps of `sharded_meta_step` on meta-batches each
process feeds its own rows of (`local_sampler`). This process computes both on its single device, in a Python loop
of the jitted meta-step; the parameters must agree. The processes are started first, so their imports overlap this
process's work, and they take the initial state from it (a file) rather than compile its initialisation twice.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import optax
import pytest

import jmeta
from helpers import mlp_apply, mlp_params, regression_task
from jmeta import cli
from jmeta.training import distributed, read_metrics, task_mesh

PROCESSES, LOCAL_DEVICES, TASKS, STEPS = 2, 2, 8, 3
_REPO = Path(__file__).resolve().parents[1]


def _learner():
  """Second-order MAML on a 1-8-8-1 tanh MLP, and Adam."""
  return jmeta.maml(mlp_apply, inner_opt=0.1, steps=1), optax.adam(1e-2)


def _initial_state(learner, outer_opt):
  return jmeta.init_state(learner, outer_opt, jax.random.PRNGKey(0), mlp_params(jax.random.PRNGKey(1)))


def _feed_keys():
  return jax.random.split(jax.random.PRNGKey(5), STEPS)


@pytest.fixture(scope='module')
def sample():
  """The meta-batch of one process on one device: `key -> vmap(regression_task)(split(key, TASKS))`."""
  return jax.jit(lambda key: jax.vmap(regression_task)(jax.random.split(key, TASKS)))


_WORKER = """
import json, os, sys, time
from jmeta.training import distributed
pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
assert distributed.initialize(f'127.0.0.1:{port}', PROCESSES, pid)
assert distributed.initialize(f'127.0.0.1:{port}', PROCESSES, pid)  # a second, agreeing call does nothing
import jax, numpy as np
import jmeta
from jmeta.training import sharded_meta_step
from helpers import regression_task
from test_distributed import _learner, _initial_state, _feed_keys

mesh = distributed.global_mesh()
learner, outer_opt = _learner()
while not os.path.exists(out + '/state.npz'):  # the initial state, which the test process computes meanwhile
  time.sleep(0.02)
with np.load(out + '/state.npz') as f:
  like = jax.tree.structure(jax.eval_shape(lambda: _initial_state(learner, outer_opt)))
  state = jax.tree.unflatten(like, [f[f'arr_{i}'] for i in range(len(f.files))])
run = out + '/run'
fit = lambda steps, resume: jmeta.fit(learner, outer_opt, regression_task, state, meta_batch=TASKS, steps=steps,
                                      out_dir=run, log_every=1, checkpoint_every=2, resume=resume, progress=False,
                                      mesh=mesh)
fit(2, False)
fitted = fit(STEPS, True)

draw = distributed.local_sampler(regression_task, TASKS, mesh)
step = sharded_meta_step(jmeta.meta_step(learner, outer_opt), mesh)
fed = state
for key in _feed_keys():
  batch = draw(key)
  fed, _ = step(fed, batch)

errors = {}
try:
  split = jmeta.Split(np.zeros((3, 5, 1), np.float32), np.zeros((3, 5, 1), np.float32))
  distributed.shard_local_meta_batch(jmeta.Task(split, split), mesh)
except ValueError as e:
  errors['odd_share'] = str(e)
try:
  distributed.initialize(f'127.0.0.1:{port}', PROCESSES, 1 - pid)
except ValueError as e:
  errors['other_id'] = str(e)
info = {'devices': jax.device_count(), 'local_devices': jax.local_device_count(), 'errors': errors,
        'rows': [distributed.local_rows(TASKS, mesh).start, distributed.local_rows(TASKS, mesh).stop],
        'batch_rows': sorted([s.index[0].start, s.index[0].stop]
                             for s in jax.tree.leaves(batch)[0].addressable_shards),
        'replicated': all(a.sharding.is_fully_replicated and not a.is_fully_addressable
                          for a in jax.tree.leaves((fitted, fed))),
        'main': distributed.is_main(), 'agree': distributed.agree(pid == 0)}
np.savez(f'{out}/{pid}.npz', *jax.tree.leaves(distributed.gather((fitted, fed))))
with open(f'{out}/{pid}.json', 'w') as f:
  json.dump(info, f)
"""


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_processes(out):
  # Not --xla_backend_optimization_level=0, though it halves compile time: on this jaxlib lower levels computed
  # wrong numbers elsewhere (a relation network's training went NaN), and this must test what users run.
  flags = f'--xla_force_host_platform_device_count={LOCAL_DEVICES}'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': os.pathsep.join([str(_REPO / 'tests'), str(_REPO)]),
         'XLA_FLAGS': f'{os.environ.get("XLA_FLAGS", "")} {flags}'.strip()}
  for name in ('JMETA_COORDINATOR', 'JMETA_NUM_PROCESSES', 'JMETA_PROCESS_ID'):
    env.pop(name, None)
  code = f'PROCESSES, TASKS, STEPS = {PROCESSES}, {TASKS}, {STEPS}\n' + _WORKER
  port = str(_free_port())
  return [subprocess.Popen([sys.executable, '-c', code, str(pid), port, str(out)], env=env, cwd=_REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for pid in range(PROCESSES)]


def _one_device(learner, outer_opt, state, sample):
  """What the processes compute, in a Python loop on this process's first device: `(fitted, fed)`."""
  step = jax.jit(jmeta.meta_step(learner, outer_opt))
  fitted = state
  for _ in range(STEPS):  # fit's scan: split the state's key, draw the meta-batch from one half, step
    key, key_batch = jax.random.split(fitted.key)
    fitted, _ = step(fitted._replace(key=key), sample(key_batch))
  fed = state
  for key in _feed_keys():
    fed, _ = step(fed, sample(key))
  return fitted, fed


def test_two_processes_match_one_device(tmp_path, sample):
  procs = _start_processes(tmp_path)
  try:
    learner, outer_opt = _learner()
    state = jax.jit(lambda: _initial_state(learner, outer_opt))()
    np.savez(tmp_path / 'state.tmp.npz', *jax.tree.leaves(state))
    os.replace(tmp_path / 'state.tmp.npz', tmp_path / 'state.npz')
    single = _one_device(learner, outer_opt, state, sample)
    logs = [p.communicate(timeout=180)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for pid, (p, log) in enumerate(zip(procs, logs)):
    assert p.returncode == 0, f'process {pid}:\n{log[-4000:]}'

  like = jax.tree.structure(single)
  results = []
  for pid in range(PROCESSES):
    with np.load(tmp_path / f'{pid}.npz') as f:
      results.append(jax.tree.unflatten(like, [f[f'arr_{i}'] for i in range(len(f.files))]))
  infos = [json.loads((tmp_path / f'{pid}.json').read_text()) for pid in range(PROCESSES)]

  chex.assert_trees_all_equal(results[0], results[1])  # replicated: every process holds the same parameters
  fitted, fed = results[0]
  assert int(fitted.step) == int(fed.step) == STEPS
  chex.assert_trees_all_close(fitted, single[0], rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(fed, single[1], rtol=1e-5, atol=1e-6)

  share = TASKS // PROCESSES
  per_device = TASKS // (PROCESSES * LOCAL_DEVICES)
  for pid, info in enumerate(infos):
    assert (info['devices'], info['local_devices']) == (PROCESSES * LOCAL_DEVICES, LOCAL_DEVICES)
    assert info['rows'] == [pid * share, (pid + 1) * share]
    assert info['batch_rows'] == [[pid * share + i * per_device, pid * share + (i + 1) * per_device]
                                  for i in range(LOCAL_DEVICES)]
    assert info['replicated'] and info['main'] == (pid == 0) and info['agree'] is True
    assert f'give a multiple of {LOCAL_DEVICES}' in info['errors']['odd_share'], info['errors']
    assert f'already initialised as process {pid} of {PROCESSES}' in info['errors']['other_id'], info['errors']

  # Process 0 alone logged; the resumed run dropped nothing and repeated nothing; both checkpoints were written.
  assert [r['step'] for r in read_metrics(tmp_path / 'run')] == list(range(1, STEPS + 1))
  assert sorted(os.listdir(tmp_path / 'run' / 'checkpoints')) == ['2', '3']


def test_initialize_checks_its_arguments(monkeypatch):
  for name in ('JMETA_COORDINATOR', 'JMETA_NUM_PROCESSES', 'JMETA_PROCESS_ID'):
    monkeypatch.delenv(name, raising=False)
  assert distributed.initialize() is False  # nothing set: one process
  assert distributed.initialize(num_processes=1) is False
  with pytest.raises(ValueError, match=r'missing: coordinator \(or \$JMETA_COORDINATOR\), process_id'):
    distributed.initialize(num_processes=2)
  with pytest.raises(ValueError, match="must be HOST:PORT.*got 'localhost'"):
    distributed.initialize('localhost', 2, 0)
  with pytest.raises(ValueError, match=r'process_id must be in 0\.\.1 for 2 processes; got 2'):
    distributed.initialize('127.0.0.1:1234', 2, 2)
  with pytest.raises(ValueError, match='num_processes must be an integer >= 1; got 0'):
    distributed.initialize('127.0.0.1:1234', 0, 0)
  monkeypatch.setenv('JMETA_NUM_PROCESSES', 'two')
  with pytest.raises(ValueError, match=r"\$JMETA_NUM_PROCESSES must be an integer; got 'two'"):
    distributed.initialize()
  monkeypatch.setenv('JMETA_NUM_PROCESSES', '2')
  monkeypatch.setenv('JMETA_PROCESS_ID', '1')
  with pytest.raises(ValueError, match=r'missing: coordinator \(or \$JMETA_COORDINATOR\)$'):
    distributed.initialize()
  with pytest.raises(ValueError, match='must be HOST:PORT'):
    cli.main(['train', '--algo', 'maml', '--dataset', 'sinusoid', '--coordinator', 'nohost:', '--out', 'unused'])
  assert not jax.distributed.is_initialized()


def test_one_process_helpers_are_the_plain_meta_batch(sample):
  mesh = task_mesh(1)
  key = jax.random.PRNGKey(3)
  assert distributed.local_rows(TASKS, mesh) == slice(0, TASKS)
  whole = sample(key)
  drawn = distributed.local_sampler(regression_task, TASKS, mesh)(key)
  chex.assert_trees_all_equal(drawn, whole)
  assert all(a.sharding == jmeta.training.task_sharding(mesh) for a in jax.tree.leaves(drawn))
  gathered = distributed.gather(drawn)
  assert all(type(a) is np.ndarray for a in jax.tree.leaves(gathered))
  chex.assert_trees_all_equal(gathered, whole)
  assert distributed.is_main() and distributed.agree(True) and not distributed.agree(False)
  with pytest.raises(ValueError, match='tasks must be an integer >= 1; got 0'):
    distributed.local_rows(0, mesh)
