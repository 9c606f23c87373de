"""Learned optimizers (issue 12, part 2): optax transformations built from meta-parameters, task families to
meta-train them on, and meta-trainers (truncated backpropagation through unrolls; persistent or antithetic ES).

Importing `jmeta.optimizers.experiment` registers the `learned-opt` algorithm and the `quadratic` and `digits`
datasets with `jmeta train`.
"""

from jmeta.optimizers.learned import (LSTMOptimizerState, MLPOptimizerState, init_lstm_meta_params,
                                      init_mlp_meta_params, log_sign, lstm_optimizer, mlp_optimizer)
from jmeta.optimizers.tasks import InnerTask, TaskFamily, TaskSpec, digits, omniglot_classification, quadratic
from jmeta.optimizers.training import ESState, TBPTTState, Unroll, curve, persistent_es, start, tbptt, unroll

__all__ = ['LSTMOptimizerState', 'MLPOptimizerState', 'init_lstm_meta_params', 'init_mlp_meta_params', 'log_sign',
           'lstm_optimizer', 'mlp_optimizer', 'InnerTask', 'TaskFamily', 'TaskSpec', 'digits',
           'omniglot_classification', 'quadratic', 'ESState', 'TBPTTState', 'Unroll', 'curve', 'persistent_es',
           'start', 'tbptt', 'unroll']
