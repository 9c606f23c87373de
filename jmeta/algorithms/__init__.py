"""Meta-learners, each a `jmeta.MetaLearner` of pure per-task functions."""

# Importing a module registers its algorithms (`jmeta.experiments`), in this order.
from jmeta.algorithms.maml import anil, fomaml, maml
from jmeta.algorithms.metasgd import MetaSGDParams, metasgd, scale_by_learned_lr
from jmeta.algorithms.reptile import reptile
from jmeta.algorithms.pretrained import pretrained
from jmeta.algorithms.protonet import protonet
from jmeta.algorithms.matching import matching_net
from jmeta.algorithms.relation import RelationModule, relation_net
from jmeta.algorithms.siamese import siamese_net
from jmeta.algorithms.mann import SequenceState, mann, sequence_learner
from jmeta.algorithms.neural_process import NPState, anp, cnp, latent_np, neural_process
from jmeta.algorithms.rl2 import GRUPolicy, rl2
from jmeta.algorithms.imaml import conjugate_gradient, imaml
from jmeta.algorithms.platipus import PlatipusParams, PlatipusState, platipus
from jmeta.algorithms.maml_rl import GaussianParams, maml_rl
from jmeta.algorithms.metagan import MetaGANParams, metagan, task_generator  # after the learners it wraps
from jmeta.inner import path_mask

__all__ = ['maml', 'fomaml', 'anil', 'metasgd', 'MetaSGDParams', 'scale_by_learned_lr', 'reptile', 'pretrained',
           'protonet', 'matching_net', 'relation_net', 'RelationModule', 'siamese_net', 'mann', 'sequence_learner',
           'SequenceState', 'neural_process', 'cnp', 'latent_np', 'anp', 'NPState', 'path_mask', 'rl2', 'GRUPolicy',
           'imaml', 'conjugate_gradient', 'platipus', 'PlatipusParams', 'PlatipusState', 'maml_rl', 'GaussianParams',
           'metagan', 'MetaGANParams', 'task_generator']
