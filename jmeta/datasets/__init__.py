"""Task distributions: pure samplers `key -> Task`. Omniglot's reader is `jmeta.datasets.omniglot`."""

from jmeta.datasets.episodes import episodes
from jmeta.datasets.sinusoid import Wave, sinusoid, wave

__all__ = ['Wave', 'episodes', 'sinusoid', 'wave']
