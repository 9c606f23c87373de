"""Experiments by name: the registry of algorithms and datasets, run configurations, and building them."""

from jmeta.experiments.build import Experiment, build, initial_state, keys, optimizer, outer_schedule, test_key
from jmeta.experiments.config import DEFAULT_DATASET, OPTIMIZERS, RUN_OPTIONS, Config, options, resolve
from jmeta.experiments.registry import (Algorithm, Data, Dataset, Evaluation, Option, Published, Recipe, algorithms,
                                        datasets, get_algorithm, get_dataset, register_algorithm, register_dataset)

__all__ = [
    'Algorithm', 'Config', 'DEFAULT_DATASET', 'Data', 'Dataset', 'Evaluation', 'Experiment', 'OPTIMIZERS', 'Option',
    'Published', 'RUN_OPTIONS', 'Recipe', 'algorithms', 'build', 'datasets', 'get_algorithm', 'get_dataset',
    'initial_state', 'keys', 'optimizer', 'options', 'outer_schedule', 'register_algorithm', 'register_dataset',
    'resolve', 'test_key',
]
