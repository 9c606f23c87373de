"""Layers for jmeta's models, fast on XLA:CPU: a convolution fast under vmap with per-task weights, and pooling."""

from jmeta.nn.conv import Conv, conv, resolve_impl
from jmeta.nn.pool import max_pool

__all__ = ['Conv', 'conv', 'max_pool', 'resolve_impl']
