"""Process-level settings that make XLA:CPU faster here; the `jmeta` command applies them at start-up."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's <malloc.h>


def tune_malloc() -> bool:
  """Tells glibc's malloc to keep the memory XLA frees instead of handing it back to the kernel.

  XLA:CPU allocates and frees a step's large buffers anew on every call. By default glibc serves those from fresh
  `mmap`s and unmaps them when freed, so every step pays page faults for zeroed memory again: for a second-order
  MAML step on Omniglot, about a third of its time here (`benchmarks/notes/conv_variants.md`). With `mmap` off,
  no trimming and one arena, freed pages are reused: 1.0-1.6x faster steps, at the cost of the process keeping
  its peak memory until it exits.

  Call it first thing, before large allocations (the `jmeta` command does). Setting `JMETA_MALLOC=default` in the
  environment turns it off. Returns whether the settings were applied: False off glibc or when turned off.
  """
  if os.environ.get('JMETA_MALLOC', '').lower() == 'default':
    return False
  name = ctypes.util.find_library('c')
  try:
    libc = ctypes.CDLL(name)
    mallopt = libc.mallopt
  except (OSError, AttributeError, TypeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  # mallopt returns 1 on success; the trim threshold is an int, so the largest positive one means "never".
  return all(mallopt(param, value) == 1 for param, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
