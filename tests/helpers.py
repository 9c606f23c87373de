"""Small models and tasks shared by the tests, each drawn in one jitted program (eagerly every random draw and op of
a new shape compiles a program of its own)."""

import functools

import jax
import jax.numpy as jnp

from jmeta.tasks import Split, Task


@functools.partial(jax.jit, static_argnames=('sizes', 'dtype'))
def mlp_params(key, sizes=(1, 8, 8, 1), dtype=jnp.float32):
  """A plain-dict MLP, so the algorithms are tested without Flax."""
  params = {}
  for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
    key, kw, kb = jax.random.split(key, 3)
    name = 'head' if i == len(sizes) - 2 else f'hidden_{i}'
    params[name] = {'w': jax.random.normal(kw, (m, n), dtype) / jnp.sqrt(m),
                    'b': 0.1 * jax.random.normal(kb, (n,), dtype)}
  return params


def mlp_apply(params, x):
  """tanh MLP: smooth, so finite differences are exact to O(eps^2)."""
  names = sorted(k for k in params if k != 'head') + ['head']
  for name in names[:-1]:
    x = jnp.tanh(x @ params[name]['w'] + params[name]['b'])
  return x @ params['head']['w'] + params['head']['b']


@functools.partial(jax.jit, static_argnames=('shots', 'queries', 'dtype'))
def regression_task(key, shots=5, queries=7, dtype=jnp.float32):
  """A random smooth regression task with `[n, 1]` inputs and targets."""
  ks = jax.random.split(key, 4)
  a, p = jax.random.uniform(ks[0], (), dtype, 0.5, 2.0), jax.random.uniform(ks[1], (), dtype, 0.0, 3.0)
  xs = jax.random.uniform(ks[2], (shots, 1), dtype, -3.0, 3.0)
  xq = jax.random.uniform(ks[3], (queries, 1), dtype, -3.0, 3.0)
  return Task(Split(xs, a * jnp.sin(xs - p)), Split(xq, a * jnp.sin(xq - p)))


@functools.partial(jax.jit, static_argnames=('tasks', 'shots', 'queries', 'dtype'))
def meta_batch(key, tasks=4, **kwargs):
  return jax.vmap(lambda k: regression_task(k, **kwargs))(jax.random.split(key, tasks))


def kill_after_checkpoint(argv, run_dir, step, timeout=300):
  """Starts `argv` (a `jmeta train ... --out run_dir` command), SIGKILLs it as soon as checkpoint `step` exists."""
  import signal
  import subprocess
  import time
  proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  deadline = time.time() + timeout
  while not (run_dir / 'checkpoints' / str(step)).is_dir() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
