"""Host memory: keep freed blocks in the process instead of handing them back to the OS.

XLA on CPU allocates each call's temporaries with `malloc` and frees them when the call
returns. glibc serves every block over 32 MiB with a fresh `mmap` and unmaps it on
`free`, so every call of a compiled program faults its temporaries in again, one 4 KiB
page at a time, and the kernel zeroes each page. For cached decoding, many short calls
whose temporaries are hundreds of MB, that is a tenth of the time (docs/BENCHMARKS.md).

`retain_freed_memory()` tells glibc to serve large blocks from its heap and to keep the
heap's freed top instead of trimming it, so the next call reuses pages already mapped.
The price is resident memory: what a process has freed stays counted in its RSS.
`prompt_tuning.infer` and `prompt_tuning.eval` turn it on; `prompt_tuning.train` does not
(a training step gains nothing measurable and full fine-tuning's peak RSS grows by about
10 %). Override per run with `--gin.host_memory.retain_freed=True` (or `False`).
"""
from __future__ import annotations

import ctypes
import sys
from typing import Optional

import gin

# glibc's <malloc.h> parameter numbers for mallopt().
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1
# The same two settings as the environment glibc reads when a process starts, for
# processes launched with it (scripts/benchmark.py's workers, torch's included).
ENVIRONMENT = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(_INT_MAX)}


def _glibc() -> Optional[ctypes.CDLL]:
  if not sys.platform.startswith("linux"):
    return None
  try:
    libc = ctypes.CDLL(None)  # the C library this process already runs on
  except OSError:
    return None
  # mallopt's parameter numbers above are glibc's; musl and others differ or lack it.
  if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
    return None
  return libc


def retain_freed_memory() -> bool:
  """Makes glibc `malloc` keep freed memory mapped for reuse; returns whether it applied.

  Process-wide and permanent for the process. Returns False, changing nothing, where the
  C library is not glibc (macOS, musl).
  """
  libc = _glibc()
  if libc is None:
    return False
  libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  libc.mallopt.restype = ctypes.c_int
  # mallopt returns 1 on success. The trim threshold first: with it set, freeing the
  # heap's top no longer returns pages to the OS (and glibc stops adapting it).
  return bool(libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX) and libc.mallopt(_M_MMAP_MAX, 0))


@gin.configurable("host_memory", denylist=["default"])
def configure(retain_freed: Optional[bool] = None, default: bool = False) -> bool:
  """Applies the command line's choice: gin's `host_memory.retain_freed`, else `default`.

  Returns whether freed memory is now retained.
  """
  if retain_freed is None:
    retain_freed = default
  return retain_freed_memory() if retain_freed else False
