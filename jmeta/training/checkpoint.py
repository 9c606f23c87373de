"""Checkpoints of a `TrainState` with Orbax: save every so often, restore the latest to resume."""

from __future__ import annotations

import os

import jax
import numpy as np

from jmeta.training.meta_step import TrainState


class Checkpoints:
  """The checkpoints of one run, in `directory` (created if missing); keeps the newest `max_to_keep`."""

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
    import orbax.checkpoint as ocp  # Heavy; only runs that checkpoint pay for it.
    self._ocp = ocp
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory), options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def save(self, state: TrainState) -> None:
    """Saves `state` under its step (asynchronously; `wait` or `close` to be sure it is on disk)."""
    self._manager.save(int(state.step), args=self._ocp.args.StandardSave(state))

  def restore(self, like: TrainState, step: int | None = None) -> TrainState:
    """The state saved at `step` (default: the latest), laid out like `like`: its structure, shapes, dtypes and
    shardings, so a run saved on some devices resumes on others. `like` may be abstract (`jax.eval_shape`): its
    leaves without a sharding go to this process's first device."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint to restore in {self._manager.directory}')
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, 'sharding', None) or default), like)
    restored = self._manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
    # Orbax's arrays are committed to their device, a fresh state's are not, and jit lowers the two differently:
    # a resumed run, or `jmeta eval`, would compile again the programs its uninterrupted twin had cached.
    return TrainState(*jax.tree.map(lambda a, r: r if _placed(a) else jax.device_put(np.asarray(r)), like, restored))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _placed(a) -> bool:
  """Whether `a` (an array or an abstract one) is laid out on chosen devices rather than left to the default."""
  return a.committed if isinstance(a, jax.Array) else getattr(a, 'sharding', None) is not None
