"""Task distributions: pure samplers `key -> Task`, or `SequenceTask`. Omniglot: `jmeta.datasets.omniglot`."""

from jmeta.datasets.episodes import episodes
from jmeta.datasets.gp import gp_functions, gp_sample, rbf_kernel
from jmeta.datasets.sequences import label_sequences
from jmeta.datasets.sinusoid import Wave, sinusoid, wave

__all__ = ['Wave', 'episodes', 'gp_functions', 'gp_sample', 'label_sequences', 'rbf_kernel', 'sinusoid', 'wave']
