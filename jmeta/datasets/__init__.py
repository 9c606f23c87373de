"""Task distributions: pure samplers `key -> Task`."""

from jmeta.datasets.sinusoid import Wave, sinusoid, wave

__all__ = ['Wave', 'sinusoid', 'wave']
