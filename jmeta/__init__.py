"""jmeta: meta-learning and few-shot learning as pure JAX functions."""

from jmeta import algorithms, datasets, envs, losses, models, sequences
from jmeta.algorithms import (anil, anp, cnp, fomaml, imaml, latent_np, maml, maml_rl, mann, matching_net, metasgd,
                              neural_process, path_mask, platipus, pretrained, protonet, relation_net, reptile, rl2,
                              sequence_learner, siamese_net)
from jmeta.base import MetaLearner
from jmeta.envs import Environment, Trajectory, rollout
from jmeta.evaluation import Summary, evaluator, summarize
from jmeta.inner import inner_loop
from jmeta.sequences import SequenceTask, check_sequence_task, shifted_labels
from jmeta.tasks import Split, Task, check_meta_batch, check_task, task_spec
from jmeta.training import TrainState, fit, init_state, meta_step

__version__ = '0.1.0'

__all__ = [
    'Environment', 'MetaLearner', 'SequenceTask', 'Split', 'Summary', 'Task', 'TrainState', 'Trajectory',
    'algorithms', 'anil', 'anp', 'check_meta_batch', 'check_sequence_task', 'check_task', 'cnp', 'datasets', 'envs',
    'evaluator', 'fit', 'fomaml', 'imaml', 'init_state', 'inner_loop', 'latent_np', 'losses', 'maml', 'mann',
    'matching_net', 'meta_step', 'metasgd', 'models', 'neural_process', 'path_mask', 'platipus', 'pretrained',
    'protonet', 'relation_net', 'reptile', 'rl2', 'rollout', 'sequence_learner', 'sequences', 'shifted_labels',
    'siamese_net', 'summarize', 'task_spec', 'maml_rl',
]
