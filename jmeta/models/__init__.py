"""Flax modules jmeta builds its models from (any `apply_fn(params, x)` works with the algorithms)."""

from jmeta.models.mlp import MLP

__all__ = ['MLP']
