"""The registry's `omniglot-sequences`: label-offset episodes of Omniglot characters (Santoro et al., 2016).

Each episode shows `ways * shots` drawings of `ways` freshly drawn characters in a random order, under a fresh
random labelling, the label of step `t` given at step `t + 1` (`jmeta.datasets.label_sequences`). As in Santoro et
al. (arXiv:1605.06065, section 4.1): images downscaled to 20x20, 1,200 characters for training and the other 423
for testing, 90/180/270 degree rotations as new classes, and random rotations and translations of each class.
Labels are one-hot, or the paper's five-character strings (`--labels string`). The score is the accuracy over a
whole episode, with the accuracy at the 1st, 2nd, 3rd, 4th, 5th and 10th instance
of a class beside it (the paper's Table 1).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from jmeta.datasets import omniglot
from jmeta.datasets.sequences import LABELS, label_sequences
from jmeta.experiments import Data, Dataset, Option, register_dataset
from jmeta.sequences import accuracy_by_instance, sequence_accuracy, sequence_cross_entropy

INSTANCES = (1, 2, 3, 4, 5, 10)
"""The instances of Santoro et al.'s Table 1."""


def _non_negative(value, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float('inf'):
    raise ValueError(f'{name} must be a finite number >= 0; got {value!r}')
  return float(value)


def _load(c, data_dir: str | None = None) -> Data:
  """Sequences of the split's train, validation and test characters at `image_size`."""
  data = omniglot.load(data_dir, size=c.image_size)
  parts = {part: omniglot.split_images(data, part, c.split) for part in ('train', 'val', 'test')}
  if not len(parts['val']):
    parts['val'] = parts['test']  # Lake et al.'s split has no validation characters.
  rotations = c.split == 'vinyals'
  train_tasks = label_sequences(parts['train'], c.ways, c.shots, rotations=rotations, max_angle=c.max_angle,
                                max_shift=c.max_shift, labels=c.labels)
  # Held-out characters are shown as they are (with their rotations as classes): the jitter is a training device.
  valid_tasks, test_tasks = (label_sequences(parts[p], c.ways, c.shots, rotations=rotations, labels=c.labels)
                             for p in ('val', 'test'))

  def model(role: str):
    raise ValueError(f'omniglot-sequences has no {role!r} model: a sequence learner brings its own recurrent model')

  return Data(train_tasks=train_tasks, valid_tasks=valid_tasks, test_tasks=test_tasks, model=model,
              example_x=jnp.asarray(parts['train'][:2, 0]), loss_fn=sequence_cross_entropy, metrics_fn=None,
              score=sequence_accuracy, metric='accuracy',
              breakdown=functools.partial(accuracy_by_instance, instances=INSTANCES),
              breakdown_names=tuple(f'instance_{k}' for k in INSTANCES))


register_dataset(Dataset(
    name='omniglot-sequences', kind='sequence',
    summary='label-offset episodes of Omniglot characters, 20x20, rotated and shifted (Santoro et al., 2016)',
    options=(
        Option('ways', 'classes per episode, the width of the one-hot labels (default 5)'),
        Option('shots', 'instances of each class per episode (default 10: 50 steps)'),
        Option('labels', "one-hot (the default) or string: random five-character strings of five letters per "
               "episode, Santoro et al.'s labels for 15 classes", str, default='one-hot', choices=LABELS),
        Option('split', 'vinyals (1,200 characters + rotations for training, the default) or lake', str,
               default='vinyals', choices=omniglot.SPLITS),
        Option('image_size', 'side of the downscaled images (default 20)', minimum=4),
        Option('max_angle', 'largest random rotation of a training class, degrees (default 30; 0: none)', float,
               validate=_non_negative),
        Option('max_shift', 'largest random shift of a training class, pixels (default 2; 0: none)', float,
               validate=_non_negative),
    ),
    # Santoro et al. (2016), section 4.1: 5 classes, episodes of 50 steps, 20x20 images. Their text gives no jitter
    # range; 30 degrees and 10 of 105 pixels (2 at 20x20) are those of the public reimplementation
    # github.com/tristandeleu/ntm-one-shot.
    defaults=dict(ways=5, shots=10, image_size=20, max_angle=30.0, max_shift=2.0),
    load=_load))
