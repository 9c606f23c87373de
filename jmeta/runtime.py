"""Process-level settings that make XLA:CPU faster here: the `jmeta` command tunes malloc at start-up; the tests
also compile faster."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's <malloc.h>
FAST_COMPILE_FLAGS = {'--xla_backend_optimization_level': '1', '--xla_cpu_use_fusion_emitters': 'false'}
"""The `XLA_FLAGS` entries `tune_xla_compile` adds, flag name to value."""


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
  """Has XLA:CPU compile faster, for processes that spend more time compiling than running (the test suite,
  short runs): LLVM at -O1 instead of -O3 and the older fusion emitters instead of the MLIR ones, that is
  `--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false` in `XLA_FLAGS`.

  Most of the compile time of a small program is spent on the code XLA emits for fusions and for threefry's
  unrolled rounds; convolutions and matmuls are library calls neither flag touches. Each flag alone gains less
  than the two together (a conv4 `init`: 1.1 s to compile with XLA's defaults, 0.4 s at -O1, 0.3 s with both;
  the older emitters alone 2.9 s). Measured here (`benchmarks/notes/compile_level.md`): the test suite's wall
  time a third lower; full-size meta-steps compile faster but can run slower, so the `jmeta` command, whose runs
  are long, keeps XLA's defaults.

  Call it before JAX starts its backend (the first computation): XLA reads `XLA_FLAGS` once, and processes
  started later inherit it. Applied only for the CPU backend: not when `JAX_PLATFORMS` names another platform or
  a GPU or TPU plugin is installed (they compile device code through the level too, unmeasured here). A flag
  already in `XLA_FLAGS` keeps its value, and `JMETA_XLA_OPT=default` turns this off. Returns whether
  `XLA_FLAGS` changed.
  """
  flags = os.environ.get('XLA_FLAGS', '')
  if os.environ.get('JMETA_XLA_OPT', '').lower() == 'default' or not _cpu_only():
    return False
  if 'jax' in sys.modules:
    from jax._src import xla_bridge
    if xla_bridge.backends_are_initialized():
      return False
  added = [f'{name}={value}' for name, value in FAST_COMPILE_FLAGS.items() if name not in flags]
  os.environ['XLA_FLAGS'] = ' '.join([flags, *added]).strip()
  return bool(added)


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
