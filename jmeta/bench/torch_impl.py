"""PyTorch implementations of the benchmark cases, with the same model, weights, data, losses and optimizers.

- 'torch_loop': a Python loop over tasks, each adapted with `torch.autograd.grad(..., create_graph=True)` on the
  module's parameters through `torch.func.functional_call`, as learn2learn and higher do; the query losses are
  back-propagated task by task and Adam steps once.
- 'torch_func': `torch.func.vmap` over tasks of `torch.func.grad` of the per-task meta-loss, with the inner
  gradient taken by a nested `torch.func.grad` (first order: detached).

Layouts differ from Flax's (NCHW activations, OIHW kernels, `[out, in]` dense weights); `load` converts a jmeta
params pytree, and the encoders pad as Flax's 'SAME' does (asymmetrically for stride 2) and flatten in Flax's
(height, width, channel) order, so both sides compute the same function.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jmeta.bench.cases import Case

IMPLS = ('torch_loop', 'torch_func')


def impls(case: Case) -> tuple[str, ...]:
  """The implementations of `case`: ProtoNets' step is one episode, with no tasks to loop or vmap over."""
  return IMPLS[:1] if case.kind == 'protonet' else IMPLS


def _same_pads(size: int, stride: int, kernel: int = 3) -> tuple[int, int]:
  """Flax/XLA 'SAME' padding of one spatial dimension: (low, high)."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class Block(nn.Module):

  def __init__(self, cin: int, cout: int, stride: int, pool: bool, size: int):
    super().__init__()
    lo, hi = _same_pads(size, stride)
    self.pad = (lo, hi, lo, hi)
    self.conv = nn.Conv2d(cin, cout, 3, stride=stride)
    self.norm = nn.BatchNorm2d(cout, eps=1e-5, track_running_stats=False)
    self.pool = pool

  def forward(self, x):
    x = F.relu(self.norm(self.conv(F.pad(x, self.pad))))
    return F.max_pool2d(x, 2) if self.pool else x


class Conv4(nn.Module):
  """conv4 in MAML's form (stride 2) or ProtoNets' (stride 1, max-pooled); NCHW `[batch, 1, 28, 28]` in,
  features flattened in Flax's order out."""

  def __init__(self, filters: int, stride: int, pool: bool, size: int = 28, channels: int = 1, blocks: int = 4):
    super().__init__()
    layers, cin = [], channels
    for _ in range(blocks):
      layers.append(Block(cin, filters, stride, pool, size))
      size = -(-size // stride)
      size = size // 2 if pool else size
      cin = filters
    self.blocks = nn.Sequential(*layers)
    self.features = size * size * filters

  def forward(self, x):
    x = self.blocks(x)
    return x.permute(0, 2, 3, 1).flatten(1)


class Classifier(nn.Module):

  def __init__(self, encoder: nn.Module, features: int, ways: int):
    super().__init__()
    self.encoder, self.head = encoder, nn.Linear(features, ways)

  def forward(self, x):
    return self.head(self.encoder(x))


class MLP(nn.Module):

  def __init__(self):
    super().__init__()
    self.hidden_0, self.hidden_1, self.head = nn.Linear(1, 40), nn.Linear(40, 40), nn.Linear(40, 1)

  def forward(self, x):
    return self.head(F.relu(self.hidden_1(F.relu(self.hidden_0(x)))))


def module(case: Case) -> nn.Module:
  if case.kind == 'sinusoid':
    return MLP()
  if case.kind == 'protonet':
    return Conv4(case.filters, 1, True, case.size, case.channels, case.blocks)
  encoder = Conv4(case.filters, 1 if case.pooled else 2, case.pooled, case.size, case.channels, case.blocks)
  return Classifier(encoder, encoder.features, case.ways)


def load(case: Case, params: Any, dtype=torch.float32) -> dict[str, torch.Tensor]:
  """The torch parameters (`named_parameters` names) holding the jmeta/Flax `params` pytree."""
  out = {}

  def dense(prefix, p):
    out[f'{prefix}.weight'] = np.asarray(p['kernel']).T
    out[f'{prefix}.bias'] = np.asarray(p['bias'])

  def encoder(prefix, p):
    for i in range(case.blocks):
      b = p[f'block{i}']
      out[f'{prefix}blocks.{i}.conv.weight'] = np.transpose(np.asarray(b['conv']['kernel']), (3, 2, 0, 1))
      out[f'{prefix}blocks.{i}.conv.bias'] = np.asarray(b['conv']['bias'])
      out[f'{prefix}blocks.{i}.norm.weight'] = np.asarray(b['norm']['scale'])
      out[f'{prefix}blocks.{i}.norm.bias'] = np.asarray(b['norm']['bias'])

  if case.kind == 'sinusoid':
    for name in ('hidden_0', 'hidden_1', 'head'):
      dense(name, params[name])
  elif case.kind == 'protonet':
    encoder('', params)
  else:
    encoder('encoder.', params['encoder'])
    dense('head', params['head'])
  return {k: torch.tensor(np.ascontiguousarray(v), dtype=dtype) for k, v in out.items()}


def to_torch(data: dict[str, np.ndarray], dtype=torch.float32) -> dict[str, torch.Tensor]:
  """The meta-batch with images as NCHW and labels as int64."""
  out = {}
  for k, v in data.items():
    t = torch.from_numpy(np.ascontiguousarray(v))
    if k.endswith('_x') and v.ndim == 5:
      t = t.permute(0, 1, 4, 2, 3).contiguous()
    out[k] = t.long() if t.dtype == torch.int32 else t.to(dtype)
  return out


def _task_loss_fn(case: Case, net: nn.Module) -> Callable:
  """`loss(params, sx, sy, qx, qy, create_graph)` of one task, with `params` a dict of tensors."""
  loss_fn = F.mse_loss if case.kind == 'sinusoid' else F.cross_entropy
  call = torch.func.functional_call

  if case.kind == 'protonet':

    def proto(params, sx, sy, qx, qy, create_graph=True):
      zs, zq = call(net, params, (sx,)), call(net, params, (qx,))
      one_hot = F.one_hot(sy, case.ways).to(zs.dtype)
      prototypes = one_hot.T @ zs / one_hot.sum(0)[:, None]
      logits = -((zq[:, None, :] - prototypes[None]) ** 2).sum(-1)
      return F.cross_entropy(logits, qy)

    return proto

  def maml(params, sx, sy, qx, qy, create_graph=True):
    names = list(params)
    fast = dict(params)
    for _ in range(case.inner_steps):
      support_loss = loss_fn(call(net, fast, (sx,)), sy)
      grads = torch.autograd.grad(support_loss, [fast[n] for n in names],
                                  create_graph=create_graph and not case.first_order)
      fast = {n: fast[n] - case.inner_lr * g for n, g in zip(names, grads)}
    return loss_fn(call(net, fast, (qx,)), qy)

  return maml


def _func_task_loss_fn(case: Case, net: nn.Module) -> Callable:
  """The per-task meta-loss written with `torch.func.grad` for the inner gradient (vmappable)."""
  loss_fn = F.mse_loss if case.kind == 'sinusoid' else F.cross_entropy
  call = torch.func.functional_call

  def task_loss(params, sx, sy, qx, qy):
    fast = params
    for _ in range(case.inner_steps):
      grads = torch.func.grad(lambda p: loss_fn(call(net, p, (sx,)), sy))(fast)
      if case.first_order:
        grads = {n: g.detach() for n, g in grads.items()}
      fast = {n: fast[n] - case.inner_lr * grads[n] for n in fast}
    return loss_fn(call(net, fast, (qx,)), qy)

  return task_loss


def meta_loss_and_grad(case: Case, impl: str, params: Any, data: dict[str, np.ndarray], dtype=torch.float64
                       ) -> tuple[float, dict[str, np.ndarray]]:
  """The mean meta-loss over tasks and its gradient (torch names), as `impl`'s step computes them."""
  net = module(case).to(dtype)
  p = {k: v.requires_grad_(True) for k, v in load(case, params, dtype).items()}
  d = to_torch(data, dtype)
  batch = (d['support_x'], d['support_y'], d['query_x'], d['query_y'])
  if impl == 'torch_loop':
    task_loss = _task_loss_fn(case, net)
    total = sum(task_loss(p, *(a[i] for a in batch)) for i in range(case.meta_batch)) / case.meta_batch
    grads = torch.autograd.grad(total, list(p.values()))
    return float(total.detach()), {k: g.numpy() for k, g in zip(p, grads)}
  task_loss = _func_task_loss_fn(case, net)
  detached = {k: v.detach() for k, v in p.items()}
  grads, losses = torch.func.vmap(torch.func.grad_and_value(task_loss), in_dims=(None, 0, 0, 0, 0))(detached, *batch)
  return float(losses.mean()), {k: g.mean(0).numpy() for k, g in grads.items()}


class Built(NamedTuple):
  run: Callable[[], None]
  compile_s: float | None
  xla_flops: float | None
  xla_memory_mb: float | None


def build(case: Case, impl: str, params: Any, data: dict[str, np.ndarray]) -> Built:
  """`impl`'s meta-step (forward, backward, Adam) from `params` on the fixed meta-batch `data`, float32."""
  if impl not in impls(case):
    raise ValueError(f'{case.name}: unknown torch implementation {impl!r}; expected one of {impls(case)}')
  net = module(case)
  p = {k: v.requires_grad_(True) for k, v in load(case, params).items()}
  opt = torch.optim.Adam(p.values(), lr=case.outer_lr)
  d = to_torch(data)
  batch = (d['support_x'], d['support_y'], d['query_x'], d['query_y'])
  tasks = [tuple(a[i] for a in batch) for i in range(case.meta_batch)]

  if impl == 'torch_loop':
    task_loss = _task_loss_fn(case, net)

    def run():
      opt.zero_grad(set_to_none=True)
      for t in tasks:
        (task_loss(p, *t) / len(tasks)).backward()
      opt.step()

  else:
    vgrad = torch.func.vmap(torch.func.grad(_func_task_loss_fn(case, net)), in_dims=(None, 0, 0, 0, 0))

    def run():
      grads = vgrad({k: v.detach() for k, v in p.items()}, *batch)
      for k, v in p.items():
        v.grad = grads[k].mean(0)
      opt.step()

  return Built(run, None, None, None)
