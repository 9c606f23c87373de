"""Data parallelism over tasks: the meta-batch split across devices with `jax.sharding`, everything else replicated.

The meta-step is unchanged: its `vmap` over tasks is split by XLA's SPMD partitioner, each device computes the
meta-gradients of its share of the tasks, and the mean over tasks becomes an all-reduce. Only shardings are added:
the meta-batch `[tasks, ...]` is `NamedSharding(mesh, P('tasks'))`; params, optimizer state, step and key are
replicated, `NamedSharding(mesh, P())`. The meta-batch size must be divisible by the number of devices.

One host, all its devices:

    mesh = jmeta.training.task_mesh()                 # or task_mesh(4): the first 4 of jax.devices()
    state = jmeta.fit(learner, outer_opt, sample, state, meta_batch=32, steps=10_000, mesh=mesh)

    step = jmeta.training.sharded_meta_step(jmeta.meta_step(learner, outer_opt), mesh)
    state, metrics = step(state, batch)               # batch: [32, ...], split 32 / mesh.size per device

On CPU, make several devices with `XLA_FLAGS=--xla_force_host_platform_device_count=N`, set before JAX starts.

Several hosts: run the same program on every host, calling `jax.distributed.initialize()` first, so that
`jax.devices()` lists the devices of all hosts and `task_mesh()` spans them:

    jax.distributed.initialize()                      # coordinator address etc. from the environment or arguments
    mesh = jmeta.training.task_mesh()                 # global devices, all hosts
    state = jmeta.init_state(learner, outer_opt, jax.random.PRNGKey(seed), model_params)  # same seed everywhere
    state = jmeta.fit(learner, outer_opt, sample, state, meta_batch=B, steps=S, mesh=mesh)

Every host must pass the same state, in particular the same key (`jax.device_put` onto the global mesh checks
that the values agree): `fit` samples each meta-batch on device from the replicated key, each device drawing only
its own tasks, so no host loads or sends task data. Only the metrics, replicated, come back to each host. A
meta-batch loaded on the hosts instead is assembled from each host's share of the tasks with
`jax.make_array_from_process_local_data(task_sharding(mesh), local_batch)`.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jmeta.base import Metrics
from jmeta.tasks import Task, check_meta_batch
from jmeta.training.meta_step import MetaStep, TrainState

TASKS = 'tasks'
"""The mesh axis the meta-batch is split over."""


def task_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis `Mesh` named 'tasks'.

  Args:
    devices: None for all of `jax.devices()` (every host's, after `jax.distributed.initialize()`); an int N for
      the first N of them; or a sequence of devices.
  Returns:
    `Mesh` of shape `{'tasks': len(devices)}`.
  """
  available = jax.devices()
  if devices is None:
    devices = available
  elif isinstance(devices, numbers.Integral) and not isinstance(devices, bool):
    n = int(devices)
    if n < 1:
      raise ValueError(f'task_mesh needs at least one device; got {n}')
    if n > len(available):
      raise ValueError(
          f'task_mesh({n}) asks for {n} devices but only {len(available)} {available[0].platform} device(s) exist. '
          f'On CPU, set XLA_FLAGS=--xla_force_host_platform_device_count={n} in the environment before JAX '
          'initialises its backend (before the first JAX computation).')
    devices = available[:n]
  else:
    devices = list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
      raise ValueError(f'task_mesh needs None, a device count or a non-empty sequence of devices; got {devices!r}')
  return Mesh(np.array(devices), (TASKS,))


def task_sharding(mesh: Mesh) -> NamedSharding:
  """`NamedSharding(mesh, P('tasks'))`: a leading task axis split over the mesh's 'tasks' axis."""
  _check_mesh(mesh)
  return NamedSharding(mesh, P(TASKS))


def replicated(mesh: Mesh) -> NamedSharding:
  """`NamedSharding(mesh, P())`: a full copy on every device of `mesh`."""
  return NamedSharding(mesh, P())


def check_divisible(tasks: int, mesh: Mesh) -> None:
  """Raises `ValueError` unless `tasks` (the meta-batch size) splits evenly over the mesh's 'tasks' axis."""
  n = _check_mesh(mesh)
  if tasks % n:
    raise ValueError(f'the meta-batch of {tasks} tasks cannot be split evenly over {n} devices; use a meta-batch '
                     f'size divisible by {n}')


def shard_meta_batch(batch: Task, mesh: Mesh) -> Task:
  """`batch` placed with its leading task axis split over the mesh, `[tasks, ...]` -> `[tasks / devices, ...]` each.

  With several hosts each must pass the same whole batch; to give each host's share only, see the module
  docstring.
  """
  check_divisible(check_meta_batch(batch), mesh)
  return jax.device_put(batch, task_sharding(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """`tree` (params, optimizer state, a `TrainState`, a sampler's data...) copied to every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def constrain_step(step: MetaStep, mesh: Mesh) -> MetaStep:
  """`step` with sharding constraints: the meta-batch split over 'tasks', the state replicated in and out.

  The computation is `step`'s; only XLA's partitioning changes. Inside `jax.jit`, including the scan of
  `sampled_steps`, the constraint on the batch also splits the sampling that produced it.
  """
  tasks, rep = task_sharding(mesh), replicated(mesh)

  def constrained(state: TrainState, batch: Task):
    check_divisible(check_meta_batch(batch), mesh)
    state = jax.lax.with_sharding_constraint(state, rep)
    batch = jax.lax.with_sharding_constraint(batch, tasks)
    state, metrics = step(state, batch)
    return jax.lax.with_sharding_constraint((state, metrics), rep)

  return constrained


def sharded_meta_step(step: MetaStep, mesh: Mesh) -> MetaStep:
  """`step` jitted over `mesh`: state replicated, meta-batch `[tasks, ...]` split over 'tasks'.

  Returns `run(state, batch) -> (state, metrics)`, which places its inputs (`replicate`, `shard_meta_batch`; a
  no-op for inputs already placed so) and calls the jitted step; state and metrics come back replicated.
  """
  tasks, rep = task_sharding(mesh), replicated(mesh)
  jitted = jax.jit(constrain_step(step, mesh), in_shardings=(rep, tasks), out_shardings=(rep, rep))

  def run(state: TrainState, batch: Task) -> tuple[TrainState, Metrics]:
    return jitted(replicate(state, mesh), shard_meta_batch(batch, mesh))

  return run


def _check_mesh(mesh: Mesh) -> int:
  if not isinstance(mesh, Mesh) or TASKS not in mesh.axis_names:
    raise ValueError(f"expected a jax.sharding.Mesh with an axis named '{TASKS}' (see task_mesh); got {mesh!r}")
  return mesh.shape[TASKS]
