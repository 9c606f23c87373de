"""Layers for jmeta's models: a convolution fast on XLA:CPU under vmap with per-task weights, pooling, and the
external memory of memory-augmented networks (`jmeta.nn.memory`)."""

from jmeta.nn import memory
from jmeta.nn.conv import Conv, conv, resolve_impl
from jmeta.nn.memory import LRUAMemory, MemoryState, NTMMemory
from jmeta.nn.pool import max_pool

__all__ = ['Conv', 'LRUAMemory', 'MemoryState', 'NTMMemory', 'conv', 'max_pool', 'memory', 'resolve_impl']
