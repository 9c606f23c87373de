"""Layers for jmeta's models: a convolution fast under vmap with per-task weights on XLA:CPU."""

from jmeta.nn.conv import Conv, conv, resolve_impl

__all__ = ['Conv', 'conv', 'resolve_impl']
