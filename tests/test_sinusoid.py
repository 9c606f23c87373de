"""Sinusoid tasks against the MAML paper's definition."""

import jax
import jax.numpy as jnp
import numpy as np

import jmeta


def test_tasks_follow_the_drawn_wave_and_ranges():
  sample = jmeta.datasets.sinusoid(shots=10, queries=30)
  keys = jax.random.split(jax.random.PRNGKey(0), 2000)
  tasks = jax.jit(jax.vmap(sample))(keys)
  assert tasks.support.x.shape == (2000, 10, 1) and tasks.query.y.shape == (2000, 30, 1)
  waves = jax.vmap(lambda k: jmeta.datasets.wave(jax.random.split(k)[0]))(keys)
  amplitude, phase = np.asarray(waves.amplitude), np.asarray(waves.phase)
  assert 0.1 <= amplitude.min() and amplitude.max() <= 5.0 and 0 <= phase.min() and phase.max() <= np.pi
  x = np.asarray(tasks.query.x)[..., 0]
  assert -5 <= x.min() and x.max() <= 5 and abs(x.mean()) < 0.05
  expected = amplitude[:, None] * np.sin(x - phase[:, None])
  np.testing.assert_allclose(np.asarray(tasks.query.y)[..., 0], expected, rtol=1e-5, atol=1e-5)


def test_same_key_same_task_and_meta_batch_is_vmap():
  sample = jmeta.datasets.sinusoid(5)
  key = jax.random.PRNGKey(3)
  a, b = sample(key), jax.jit(sample)(key)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  batch = jax.vmap(sample)(jax.random.split(key, 4))
  assert jmeta.check_meta_batch(batch, jmeta.task_spec(a)) == 4
  assert not jnp.allclose(batch.support.y[0], batch.support.y[1])
