"""The benchmark cases: one meta-step each, with fixed shapes and synthetic data of Omniglot's or the sinusoid's
shapes (the time of a step depends on the shapes, not on the pixels, so no dataset is needed)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Case:
  """One meta-step to time.

  Attributes:
    name: the case's name, as `jmeta bench --case` takes it.
    kind: 'maml' (a meta-batch of tasks adapted by inner SGD, second or first order), 'protonet' (one episode)
      or 'sinusoid' (MAML on the 1-40-40-1 MLP).
    ways, shots, queries: classes, support and query examples per class (per task for the sinusoid).
    meta_batch: tasks per meta-step.
    inner_steps, inner_lr: the inner loop's SGD steps and step size.
    first_order: first-order MAML.
    filters: conv4's filters.
    blocks: conv4's blocks (4 in every published model; the tests compare implementations on fewer).
    outer_lr: Adam's step size for the outer update.
    remat: `jax.checkpoint` each inner step.
    vmap_size: tasks vmapped at once by the 'jmeta' step (`jmeta.meta_step`'s `vmap_size`); None: all of them.
    size, channels: the images' side and channels (28 and 1: Omniglot; 84 and 3: mini-ImageNet).
    pooled: MAML's conv4 at stride 1 with 2x2 max-pooling, its mini-ImageNet form, instead of stride 2.
  """
  name: str
  kind: str
  ways: int = 5
  shots: int = 1
  queries: int = 15
  meta_batch: int = 32
  inner_steps: int = 1
  inner_lr: float = 0.4
  first_order: bool = False
  filters: int = 64
  blocks: int = 4
  outer_lr: float = 1e-3
  remat: bool = False
  vmap_size: int | None = None
  size: int = 28
  channels: int = 1
  pooled: bool = False


CASES: dict[str, Case] = {c.name: c for c in (
    # Finn et al.'s Omniglot model (conv4, stride 2), 5-way 1-shot, one inner step of 0.4, meta-batch 32.
    Case('maml2_omniglot_5w1s', 'maml'),
    Case('fomaml_omniglot_5w1s', 'maml', first_order=True),
    # vmap_size 8: 1.6x faster than one vmap of all 32 tasks here (`python benchmarks/speed.py --vmap-sizes`).
    Case('maml2_omniglot_5w5s', 'maml', shots=5, inner_steps=5, vmap_size=8),
    # Snell et al.'s training episode: 60 ways, 5 shots, 5 queries, conv4 with max-pooling.
    Case('protonet_omniglot_60w5s', 'protonet', ways=60, shots=5, queries=5, meta_batch=1),
    # Finn et al.'s sinusoid: K = 10, meta-batch 25, inner SGD 0.01.
    Case('maml2_sinusoid', 'sinusoid', ways=1, shots=10, queries=10, meta_batch=25, inner_lr=0.01),
    # Finn et al.'s mini-ImageNet setting: 84x84x3, conv4 of 32 filters with max-pooling, 5-way 1-shot, 15
    # queries, 5 inner steps of 0.01, meta-batch 4.
    Case('maml2_miniimagenet_5w1s', 'maml', inner_steps=5, inner_lr=0.01, meta_batch=4, filters=32, size=84,
         channels=3, pooled=True),
    # Snell et al.'s mini-ImageNet training episode: 30 ways, 1 shot, 15 queries, conv4 of 64 filters.
    Case('protonet_miniimagenet_30w1s', 'protonet', ways=30, shots=1, queries=15, meta_batch=1, size=84, channels=3),
)}


def quick(case: Case) -> Case:
  """A small version of `case` (one conv block) that compiles and runs in seconds, for checking the harness."""
  if case.kind == 'sinusoid':
    return dataclasses.replace(case, meta_batch=4)
  if case.size != 28:  # the 84x84 cases at 28x28 and one inner step
    case = dataclasses.replace(case, size=28, inner_steps=1)
  if case.kind == 'protonet':
    return dataclasses.replace(case, ways=10, filters=8, queries=2, blocks=1)
  return dataclasses.replace(case, filters=8, meta_batch=2, queries=2, blocks=1)


def batch(case: Case, seed: int = 0, dtype: Any = np.float32) -> dict[str, np.ndarray]:
  """A meta-batch as NumPy arrays, channels last: 'support_x' `[tasks, ways * shots, size, size, channels]` (or
  `[tasks, shots, 1]`), 'support_y' `[tasks, ways * shots]` (int32 labels, or `[tasks, shots, 1]` targets),
  'query_x', 'query_y' likewise."""
  rng = np.random.default_rng(seed)
  if case.kind == 'sinusoid':
    n = case.shots + case.queries
    amplitude = rng.uniform(0.1, 5.0, (case.meta_batch, 1, 1))
    phase = rng.uniform(0, np.pi, (case.meta_batch, 1, 1))
    x = rng.uniform(-5, 5, (case.meta_batch, n, 1))
    y = amplitude * np.sin(x - phase)
    s = case.shots
    return {'support_x': x[:, :s].astype(dtype), 'support_y': y[:, :s].astype(dtype),
            'query_x': x[:, s:].astype(dtype), 'query_y': y[:, s:].astype(dtype)}
  out = {}
  for split, per_class in (('support', case.shots), ('query', case.queries)):
    n = case.ways * per_class
    # Ink strokes on a blank page, roughly: sparse values in [0, 1].
    shape = (case.meta_batch, n, case.size, case.size, case.channels)
    if case.channels == 1:
      out[f'{split}_x'] = (rng.random(shape) < 0.15).astype(dtype)
    else:  # colour photographs, roughly: uniform pixels in [0, 1]
      out[f'{split}_x'] = rng.random(shape).astype(dtype)
    out[f'{split}_y'] = np.tile(np.repeat(np.arange(case.ways, dtype=np.int32), per_class), (case.meta_batch, 1))
  return out
