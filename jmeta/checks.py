"""Argument checks that raise `ValueError` at the boundary, naming what was expected."""

from __future__ import annotations

import math
import numbers
from typing import Any


def check_positive_number(value: Any, name: str) -> float:
  """Returns `value` as a float if it is a finite number > 0; raises `ValueError` otherwise."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f'{name} must be a positive finite number; got {value!r}')
  value = float(value)
  if not math.isfinite(value) or value <= 0:
    raise ValueError(f'{name} must be a positive finite number; got {value!r}')
  return value


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
  """Returns `value` if it is an integer >= `minimum`; raises `ValueError` otherwise."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ValueError(f'{name} must be an integer >= {minimum}; got {value!r}')
  return int(value)


check_learning_rate = check_positive_number
"""A step size must be a finite number > 0."""
