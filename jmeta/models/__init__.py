"""Flax modules jmeta builds its models from (any `apply_fn(params, x)` works with the algorithms)."""

from jmeta.models.conv4 import Classifier, Conv4, ConvBlock, conv4_maml, conv4_protonet, conv4_relation, functional
from jmeta.models.mlp import MLP
from jmeta.models.neural_process import NeuralProcess
from jmeta.models.recurrent import LSTMClassifier, MANNClassifier

__all__ = ['MLP', 'NeuralProcess', 'LSTMClassifier', 'MANNClassifier', 'Classifier', 'Conv4', 'ConvBlock', 'conv4_maml', 'conv4_protonet', 'conv4_relation', 'functional']
