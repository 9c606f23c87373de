"""Several processes, one meta-step: the task-sharded meta-step of `jmeta.training.sharding` over `jax.distributed`.

Every process runs the same program. `initialize` joins them (the coordinator's address, the number of processes and
this process's index, from arguments or `$JMETA_COORDINATOR`, `$JMETA_NUM_PROCESSES`, `$JMETA_PROCESS_ID`);
`jax.devices()` then lists the devices of all processes, and `global_mesh()` lays them on one 'tasks' axis, process
by process. Nothing else changes: `jmeta.meta_step`, `sharded_meta_step` and `fit(..., mesh=global_mesh())` run the
same per-task code, XLA splits their `vmap` over tasks across all devices and all-reduces the meta-gradient across
processes (over Gloo on CPU, jax's default `jax_cpu_collectives_implementation`; NCCL on GPU).

    jmeta.training.distributed.initialize()          # before any JAX computation; from $JMETA_* here
    mesh = jmeta.training.distributed.global_mesh()  # every device of every process
    state = jmeta.fit(learner, outer_opt, sample, state, meta_batch=32, steps=S, mesh=mesh, out_dir=DIR)

Where the tasks come from, so that the parameters are those of one process on one device:
- `fit` samples each meta-batch on the devices from the replicated key, `vmap(sample)(split(key, meta_batch))`:
  each device draws only its own rows, and no process loads or sends task data.
- A meta-batch made on the hosts (`local_sampler`): each process draws only its own rows (`local_rows`), from the
  same per-task keys `jax.random.split(key, meta_batch)` a single process uses, and the global array is assembled
  from the processes' shares (`shard_local_meta_batch`, `jax.make_array_from_process_local_data`). Keys folded with
  the process index would give other tasks, and a trajectory that changes with the number of processes; every
  process drawing the whole meta-batch and slicing it would do the work once per process.

Checkpoints: `fit` saves with Orbax from every process (each writes its own shards; replicated arrays are written
once, by their primary replica; process 0 writes the metadata and finalises the step); the directory must be one
that every process can reach (a shared file system). Only process 0 writes `metrics.jsonl`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from jmeta.checks import check_positive_int
from jmeta.tasks import Task, check_meta_batch
from jmeta.training.sharding import check_divisible, task_mesh, task_sharding

ENV_COORDINATOR = 'JMETA_COORDINATOR'
ENV_NUM_PROCESSES = 'JMETA_NUM_PROCESSES'
ENV_PROCESS_ID = 'JMETA_PROCESS_ID'


def _env_int(value: int | None, name: str) -> int | None:
  if value is not None:
    return value
  raw = os.environ.get(name, '').strip()
  if not raw:
    return None
  try:
    return int(raw)
  except ValueError:
    raise ValueError(f'${name} must be an integer; got {raw!r}') from None


def _check_coordinator(address: Any) -> str:
  host, _, port = address.rpartition(':') if isinstance(address, str) else ('', '', '')
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f'the coordinator address must be HOST:PORT (e.g. 10.0.0.1:1234, the host of process 0 and a '
                     f'free port on it); got {address!r}')
  return address


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, *,
               local_device_ids: Sequence[int] | None = None, timeout: int = 300) -> bool:
  """Joins this process to a run of `num_processes` processes (`jax.distributed.initialize`).

  Call it first, before any JAX computation, with the same `coordinator` and `num_processes` in every process and
  a different `process_id` in each. Arguments left as None are read from `$JMETA_COORDINATOR` (HOST:PORT),
  `$JMETA_NUM_PROCESSES` and `$JMETA_PROCESS_ID`. A second call that agrees with the first does nothing.

  Args:
    coordinator: 'HOST:PORT' of process 0's coordinator service, reachable from every process.
    num_processes: how many processes take part; 1 (or nothing set at all) is a single-process run.
    process_id: this process's index, 0 .. num_processes - 1.
    local_device_ids: the local devices this process uses (default: all).
    timeout: seconds to wait for every process to join.
  Returns:
    True if the run spans several processes, False for a single process (nothing is initialised).
  """
  coordinator = coordinator if coordinator is not None else (os.environ.get(ENV_COORDINATOR, '').strip() or None)
  num_processes = _env_int(num_processes, ENV_NUM_PROCESSES)
  process_id = _env_int(process_id, ENV_PROCESS_ID)
  if coordinator is None and num_processes is None and process_id is None:
    return _already(None, None)
  for value, name in ((num_processes, 'num_processes'), (process_id, 'process_id')):
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
      raise ValueError(f'{name} must be an integer; got {value!r}')
  if num_processes is not None and num_processes < 1:
    raise ValueError(f'num_processes must be an integer >= 1; got {num_processes}')
  if num_processes == 1 and process_id in (None, 0):
    return _already(1, 0)
  missing = [f'{name} (or ${env})' for name, env, value in (
      ('coordinator', ENV_COORDINATOR, coordinator), ('num_processes', ENV_NUM_PROCESSES, num_processes),
      ('process_id', ENV_PROCESS_ID, process_id)) if value is None]
  if missing:
    raise ValueError(f'a run over several processes needs the coordinator address, the number of processes and '
                     f'this process\'s id; missing: {", ".join(missing)}')
  _check_coordinator(coordinator)
  if not 0 <= process_id < num_processes:
    raise ValueError(f'process_id must be in 0..{num_processes - 1} for {num_processes} processes; got {process_id}')
  if jax.distributed.is_initialized():
    return _already(num_processes, process_id)
  jax.distributed.initialize(coordinator, int(num_processes), int(process_id), local_device_ids=local_device_ids,
                             initialization_timeout=timeout)
  return True


def _already(num_processes: int | None, process_id: int | None) -> bool:
  """Whether `jax.distributed` already joined several processes; `ValueError` if not as asked."""
  if not jax.distributed.is_initialized():
    return False
  count, index = jax.process_count(), jax.process_index()
  if (num_processes, process_id) not in ((None, None), (count, index)):
    raise ValueError(f'jax.distributed is already initialised as process {index} of {count}; asked for process '
                     f'{process_id} of {num_processes}')
  return count > 1


def is_main() -> bool:
  """Whether this is process 0, the one that writes logs and files meant to be written once."""
  return jax.process_index() == 0


def global_mesh() -> Mesh:
  """A 'tasks' mesh over every device of every process, ordered by process, so each holds consecutive tasks."""
  return task_mesh(sorted(jax.devices(), key=lambda d: (d.process_index, d.id)))


def local_rows(tasks: int, mesh: Mesh) -> slice:
  """The rows `[start, stop)` of a meta-batch `[tasks, ...]` split over `mesh` that this process's devices hold."""
  check_divisible(check_positive_int(tasks, 'tasks'), mesh)
  held = sorted({index[0].indices(tasks)[:2] for index in
                 task_sharding(mesh).addressable_devices_indices_map((tasks,)).values()})
  if not held:
    raise ValueError(f'none of this process\'s devices ({jax.local_devices()}) is in the mesh')
  if any(a[1] != b[0] for a, b in zip(held, held[1:])):
    raise ValueError(f'this process\'s devices hold rows {held} of the meta-batch, not one block; order the mesh\'s '
                     'devices process by process (global_mesh())')
  return slice(held[0][0], held[-1][1])


def shard_local_meta_batch(local_batch: Task, mesh: Mesh) -> Task:
  """The global meta-batch `[tasks, ...]` split over `mesh`, from this process's share of it.

  Args:
    local_batch: this process's rows, `[tasks * local devices / mesh devices, ...]`, in order (`local_rows`).
  Returns:
    `Task` of global arrays `[tasks, ...]` with `task_sharding(mesh)`; every process must call it.
  """
  rows = check_meta_batch(local_batch)
  local = len(mesh.local_devices)
  if not local or rows % local:
    raise ValueError(f'{rows} tasks cannot be this process\'s share of a meta-batch over {mesh.size} devices, '
                     f'{local} of them its own; give a multiple of {local} tasks')
  tasks = rows * mesh.size // local
  mine = local_rows(tasks, mesh)
  if mine.stop - mine.start != rows:
    raise ValueError(f'this process holds {mine.stop - mine.start} of the {tasks} tasks; got {rows}')
  sharding = task_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x, (tasks, *x.shape[1:])),
                      local_batch)


def local_sampler(sample: Callable[[jax.Array], Task], tasks: int, mesh: Mesh) -> Callable[[jax.Array], Task]:
  """`draw(key) -> Task`: the meta-batch `vmap(sample)(jax.random.split(key, tasks))` split over `mesh`, of which
  this process computes only its own rows; the same tasks whatever the number of processes.

  `key` must be the same in every process (a raw key, or a replicated array); every process must call `draw`.
  """
  rows = local_rows(tasks, mesh)
  draw_rows = jax.jit(lambda key: jax.vmap(sample)(jax.random.split(key, tasks)[rows.start:rows.stop]))
  return lambda key: shard_local_meta_batch(draw_rows(local_copy(key)), mesh)


def local_copy(tree: Any) -> Any:
  """`tree` with each array replicated over several processes' devices replaced by this process's copy (on one of
  its devices), for computations of this process alone (evaluation, logging); other leaves are unchanged."""

  def local(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return x
    if not x.is_fully_replicated:
      raise ValueError(f'an array split over several processes ({x.sharding}) has no local copy; use gather')
    return x.addressable_data(0)

  return jax.tree.map(local, tree)


def gather(tree: Any) -> Any:
  """`tree` as NumPy arrays of the global values, in every process (to save or inspect); arrays split over several
  processes are all-gathered, so every process must call it."""
  from jax.experimental import multihost_utils

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(local_copy(x))

  return jax.tree.map(one, tree)


def agree(flag: bool) -> bool:
  """Process 0's `flag` in every process, for decisions that all must take together (stop training now)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(flag))))


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier called `name` (nothing to wait for with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
