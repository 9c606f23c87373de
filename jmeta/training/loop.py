"""Meta-training with a progress bar, JSONL metrics, periodic evaluation and resumable Orbax checkpoints."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import numpy as np
import optax

from jmeta.base import MetaLearner, Params
from jmeta.checks import check_positive_int
from jmeta.tasks import Task, as_pytree
from jmeta.training.distributed import agree, is_main, local_copy
from jmeta.training.meta_step import TrainState, meta_step, sampled_steps
from jmeta.training.sharding import check_divisible, constrain_step, replicate

METRICS_FILE = 'metrics.jsonl'
CHECKPOINT_DIR = 'checkpoints'


def read_metrics(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of `out_dir/metrics.jsonl`, in order."""
  path = os.path.join(out_dir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _truncate_metrics(out_dir: str, last_step: int) -> None:
  """Drops records logged after `last_step`, so a resumed run does not log a step twice."""
  kept = [r for r in read_metrics(out_dir) if r['step'] <= last_step]
  with open(os.path.join(out_dir, METRICS_FILE), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in kept)


def fit(
    learner: MetaLearner,
    outer_opt: optax.GradientTransformation,
    sample: Callable[[jax.Array], Task],
    state: TrainState,
    *,
    meta_batch: int,
    steps: int,
    out_dir: str | os.PathLike | None = None,
    log_every: int = 100,
    checkpoint_every: int | None = None,
    eval_every: int | None = None,
    eval_fn: Callable[[Params], dict[str, float]] | None = None,
    resume: bool = False,
    progress: bool = True,
    task_spec: Task | None = None,
    time_limit: float | None = None,
    mesh: jax.sharding.Mesh | None = None,
    vmap_size: int | None = None,
    grad_of_mean: bool = False,
) -> TrainState:
  """Meta-trains from `state` until `state.step == steps`.

  Each chunk of `log_every` meta-steps runs as one compiled `lax.scan` drawing its own meta-batches, so Python
  is visited once per chunk. With `out_dir`, each chunk appends one record to `metrics.jsonl` (`step`, the
  chunk's mean metrics, `elapsed_s`, and `eval_fn(params)` when due) and `checkpoint_every` steps save an Orbax
  checkpoint under `out_dir/checkpoints`. `resume=True` continues from the latest checkpoint there; as
  checkpoints fall on chunk boundaries, a resumed run replays the same computation as an uninterrupted one.
  With `time_limit` (seconds), training stops at the first chunk boundary past it, saves a checkpoint there and
  returns the state (`state.step < steps`; resume to go on). A `KeyboardInterrupt` saves a checkpoint before it
  propagates; a non-finite loss raises `FloatingPointError` and saves nothing, so the last good checkpoint stays
  the latest.

  Args:
    learner, outer_opt: the meta-learner and its outer optimizer (the one `state.opt_state` was made by).
    sample: `key -> Task`, the training task distribution.
    state: the initial state (`jmeta.init_state`); also the template a checkpoint is restored into.
    meta_batch: tasks per meta-step.
    steps: the total number of meta-steps, counting any already taken.
    mesh: a mesh with a 'tasks' axis (`jmeta.training.task_mesh()`) to split each meta-batch over, sampling
      included; the state and the sampler's data are replicated. `meta_batch` must divide evenly over it.
    vmap_size: tasks vmapped at once (`jmeta.meta_step`'s `vmap_size`): the meta-batch is mapped over in chunks
      of this many, which bounds memory and, on a CPU, can be faster than one `vmap` over all of it.
    grad_of_mean: the learner's `meta_grad` is `jax.grad(loss)`; differentiate the mean loss of each meta-batch
      (`jmeta.meta_step`'s `grad_of_mean`).
  """
  check_positive_int(meta_batch, 'meta_batch')
  check_positive_int(steps, 'steps')
  check_positive_int(log_every, 'log_every')
  if checkpoint_every is not None and (checkpoint_every < 1 or checkpoint_every % log_every):
    raise ValueError(f'checkpoint_every must be a positive multiple of log_every={log_every}; '
                     f'got {checkpoint_every}')
  if eval_every is not None and (eval_every < 1 or eval_every % log_every):
    raise ValueError(f'eval_every must be a positive multiple of log_every={log_every}; got {eval_every}')
  if mesh is not None:
    check_divisible(meta_batch, mesh)
    state = replicate(state, mesh)  # restored into the mesh's layout: a checkpoint of several processes' arrays

  main = is_main()  # with several processes, process 0 alone writes the metrics and shows progress
  checkpoints = None
  if out_dir is not None:
    os.makedirs(out_dir, exist_ok=True)
    from jmeta.training.checkpoint import Checkpoints
    checkpoints = Checkpoints(os.path.join(out_dir, CHECKPOINT_DIR))
    if resume and checkpoints.latest_step() is not None:
      state = checkpoints.restore(state)
      if main:
        _truncate_metrics(out_dir, int(state.step))
    elif not resume and (checkpoints.latest_step() is not None or read_metrics(out_dir)):
      raise ValueError(f'{out_dir} already holds a run; pass resume=True (--resume) to continue it, or choose '
                       'another directory')
  elif resume:
    raise ValueError('resume=True needs out_dir, the directory holding the checkpoints')

  step_fn = meta_step(learner, outer_opt, task_spec, vmap_size=vmap_size, grad_of_mean=grad_of_mean)
  sample = as_pytree(sample)
  if mesh is not None:
    step_fn = constrain_step(step_fn, mesh)
    sample = replicate(sample, mesh)
  chunks: dict[int, Callable] = {}

  def run_chunk(state: TrainState, n: int):
    if n not in chunks:
      chunks[n] = jax.jit(lambda state, sample: sampled_steps(step_fn, sample, meta_batch, n)(state))
    return chunks[n](state, sample)

  from tqdm.auto import tqdm
  start = int(state.step)
  bar = tqdm(total=steps, initial=start, disable=not (progress and main), unit='step', dynamic_ncols=True)
  metrics_file = open(os.path.join(out_dir, METRICS_FILE), 'a') if out_dir is not None and main else None
  t0 = time.perf_counter()
  try:
    while int(state.step) < steps:
      n = min(log_every, steps - int(state.step))
      state, metrics = run_chunk(state, n)
      step = int(state.step)
      record = {'step': step, **{k: float(np.mean(v)) for k, v in metrics.items()},
                'elapsed_s': round(time.perf_counter() - t0, 3)}
      if not np.isfinite(record['loss']):
        last = checkpoints.latest_step() if checkpoints is not None else None
        raise FloatingPointError(
            f'meta-training diverged: the loss is {record["loss"]} in the {n} steps up to step {step}. '
            + (f'The last checkpoint (step {last}) holds the state before. ' if last is not None else '')
            + 'Lower the inner or outer step size.')
      if eval_fn is not None and eval_every is not None and (step % eval_every == 0 or step == steps):
        record.update(eval_fn(state.params if jax.process_count() == 1 else local_copy(state.params)))
      if metrics_file is not None:
        metrics_file.write(json.dumps(record) + '\n')
        metrics_file.flush()
      if checkpoints is not None and checkpoint_every is not None and step % checkpoint_every == 0:
        checkpoints.save(state)
      bar.update(n)
      bar.set_postfix(loss=f'{record["loss"]:.4g}')
      if time_limit is not None and agree(time.perf_counter() - t0 >= time_limit):  # process 0's clock decides
        break
    if checkpoints is not None and checkpoints.latest_step() != int(state.step):
      checkpoints.save(state)
  except KeyboardInterrupt:
    if checkpoints is not None and int(state.step) > (checkpoints.latest_step() or 0):
      checkpoints.save(state)
    raise
  finally:
    bar.close()
    if metrics_file is not None:
      metrics_file.close()
    if checkpoints is not None:
      checkpoints.wait()
      checkpoints.close()
  return state
