"""Process-level settings that make XLA:CPU faster here: the `jmeta` command tunes malloc at start-up; the tests
also lower the compile level."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's <malloc.h>
_OPT_LEVEL = '--xla_backend_optimization_level'


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


def tune_xla_compile() -> bool:
  """Has XLA:CPU compile with LLVM at -O1 instead of its default -O3 (`--xla_backend_optimization_level=1` in
  `XLA_FLAGS`), for processes that spend more time compiling than running: the test suite, short runs.

  Most of the compile time of a small program is LLVM optimising the code XLA emits for fusions and for
  threefry's unrolled rounds (a conv4 `init`: 1.2 s at -O3, 0.4 s at -O1); convolutions and matmuls are library
  calls the level does not touch. Measured here (`benchmarks/notes/compile_level.md`): the test suite's wall time
  a sixth lower, a full-size meta-step's compile 5-10% lower, but its step time from equal to 40% slower (MAML
  5-way 1-shot on Omniglot), so the `jmeta` command, whose runs are long, does not apply it.

  Call it before JAX starts its backend (the first computation): XLA reads `XLA_FLAGS` once, and processes
  started later inherit it. Applied only for the CPU backend: not when `JAX_PLATFORMS` names another platform or
  a GPU or TPU plugin is installed (they compile device code through the same flag, unmeasured here). A level
  already in `XLA_FLAGS` is kept, and `JMETA_XLA_OPT=default` turns it off. Returns whether the flag was added.
  """
  flags = os.environ.get('XLA_FLAGS', '')
  if os.environ.get('JMETA_XLA_OPT', '').lower() == 'default' or _OPT_LEVEL in flags or not _cpu_only():
    return False
  if 'jax' in sys.modules:
    from jax._src import xla_bridge
    if xla_bridge.backends_are_initialized():
      return False
  os.environ['XLA_FLAGS'] = f'{flags} {_OPT_LEVEL}=1'.strip()
  return True


def _cpu_only() -> bool:
  """Whether JAX can only run on the CPU here: `JAX_PLATFORMS` unset or 'cpu', and no accelerator plugin."""
  platforms = os.environ.get('JAX_PLATFORMS', '').lower()
  if platforms and platforms != 'cpu':
    return False
  if importlib.metadata.entry_points(group='jax_plugins') or importlib.util.find_spec('libtpu') is not None:
    return False
  try:
    import jax_plugins  # namespace package where jax-cuda*-plugin and others install themselves
  except ImportError:
    return True
  return not list(getattr(jax_plugins, '__path__', []))
