"""Meta-training: the jittable meta-step, the loop around it, checkpoints."""

from jmeta.training.checkpoint import Checkpoints
from jmeta.training.loop import fit, read_metrics
from jmeta.training.meta_step import TrainState, init_state, meta_step, sampled_steps

__all__ = ['Checkpoints', 'TrainState', 'fit', 'init_state', 'meta_step', 'read_metrics', 'sampled_steps']
