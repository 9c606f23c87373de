"""Task distributions: pure samplers `key -> Task`, or `SequenceTask`. Omniglot: `jmeta.datasets.omniglot`."""

from jmeta.datasets.ambiguous import SineOrLine, sine_line
from jmeta.datasets.episodes import episodes
from jmeta.datasets.gp import (Kernel, gp_functions, gp_joint_log_likelihood, gp_log_likelihood, gp_predictive,
                               gp_sample, rbf_kernel, task_kernel)
from jmeta.datasets.sequences import label_sequences
from jmeta.datasets.sinusoid import Wave, sinusoid, wave

__all__ = ['Kernel', 'SineOrLine', 'Wave', 'episodes', 'gp_functions', 'gp_joint_log_likelihood', 'gp_log_likelihood',
           'gp_predictive', 'gp_sample', 'label_sequences', 'rbf_kernel', 'sine_line', 'sinusoid', 'task_kernel',
           'wave']
