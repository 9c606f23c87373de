"""Meta-training: the jittable meta-step, the loop around it, checkpoints."""

from jmeta.training.checkpoint import Checkpoints
from jmeta.training.loop import fit, read_metrics
from jmeta.training.meta_step import TrainState, init_state, meta_step, sampled_steps
from jmeta.training.sharding import (constrain_step, replicate, replicated, shard_meta_batch, sharded_meta_step,
                                     task_mesh, task_sharding)

__all__ = ['Checkpoints', 'TrainState', 'constrain_step', 'fit', 'init_state', 'meta_step', 'read_metrics',
           'replicate', 'replicated', 'sampled_steps', 'shard_meta_batch', 'sharded_meta_step', 'task_mesh',
           'task_sharding']
