"""Layers for jmeta's models: a convolution fast on XLA:CPU under vmap with per-task weights, pooling, batch
normalisation with batch statistics, and the external memory of memory-augmented networks (`jmeta.nn.memory`)."""

from jmeta.nn import memory
from jmeta.nn.conv import Conv, conv, resolve_impl
from jmeta.nn.memory import LRUAMemory, MemoryState, NTMMemory
from jmeta.nn.norm import BatchNorm, batch_norm
from jmeta.nn.pool import max_pool

__all__ = ['BatchNorm', 'Conv', 'LRUAMemory', 'MemoryState', 'NTMMemory', 'batch_norm', 'conv', 'max_pool', 'memory',
           'resolve_impl']
