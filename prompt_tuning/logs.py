"""How much a command prints: `--verbosity=0` (the default) is quiet, `1` shows everything.

TensorFlow (here only seqio's input pipeline) and XLA log their start-up from C++
straight to the process's stderr, before any Python logging is set up and whatever
`TF_CPP_MIN_LOG_LEVEL` says: oneDNN's notice, "Could not find cuda drivers", absl's
"All log messages before absl::InitializeLog()", and on a machine without a GPU a
`failed call to cuInit` error. At verbosity 0 `set_up` imports TensorFlow and JAX with
stderr caught in a file, then replays what they wrote minus those known start-up lines,
so anything else (a real error) still shows. Later C++ info and warning lines are
turned off with `TF_CPP_MIN_LOG_LEVEL=2` (errors stay), absl's Python warnings (seqio's
notes on sequence lengths) with absl's verbosity. Numerics are untouched: oneDNN stays
as TensorFlow sets it, only its message goes.

At verbosity 1 nothing is filtered and the training loop prints every logged metric.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator

_verbosity = 0

# Lines of the start-up window that say nothing to act on at verbosity 0.
_BANNER = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called"
                     # the second line of TensorFlow's cpu_feature_guard notice
                     r"|To enable the following instructions: .* rebuild TensorFlow")
# absl/glog C++ records: severity letter, date, time, thread, file:line].
_RECORD = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^ \]]+:\d+\] ")
_INFO_OR_WARNING = re.compile(r"[IW]\d{4} ")
# Error records that only say there is no GPU (TensorFlow's CUDA build on a CPU machine).
_NO_GPU = re.compile(r"failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory")
# JAX's notes when it finds no accelerator, through Python logging or warnings.
_JAX_FALLBACK = re.compile(r"An NVIDIA GPU may be present on this machine|Falling back to cpu"
                           r"|Unable to initialize backend '(cuda|rocm|tpu)'")


def verbosity() -> int:
  """The verbosity the command line set (0 unless `set_up` was called with more)."""
  return _verbosity


def is_start_up_noise(line: str) -> bool:
  """Whether a line of the start-up window is a known, harmless start-up message."""
  if _BANNER.match(line) or _JAX_FALLBACK.search(line):
    return True
  if _RECORD.match(line):
    return bool(_INFO_OR_WARNING.match(line) or _NO_GPU.search(line))
  return False


def filter_start_up(text: str) -> str:
  """`text` without its start-up noise lines."""
  return "".join(line for line in text.splitlines(keepends=True)
                 if not is_start_up_noise(line))


@contextlib.contextmanager
def _stderr_filtered() -> Iterator[None]:
  """Catches file descriptor 2 (C++ writes to it) in a file, then replays it filtered."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as caught:
    os.dup2(caught.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      caught.seek(0)
      text = filter_start_up(caught.read().decode("utf-8", "replace"))
      if text:
        sys.stderr.write(text)
        sys.stderr.flush()


def set_up(level: int = 0) -> None:
  """Sets the verbosity; at 0 imports TensorFlow and JAX quietly (see the module doc).

  Call it at a command's start, before anything imports TensorFlow: once TensorFlow is
  imported its start-up lines are out.
  """
  global _verbosity
  _verbosity = level
  if level >= 1:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if "tensorflow" not in sys.modules:
    with _stderr_filtered():
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      tf.config.list_physical_devices("GPU")  # CUDA's initialisation and its complaints
      import jax  # pylint: disable=import-outside-toplevel
      jax.devices()
  import logging  # pylint: disable=import-outside-toplevel
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  absl_logging.set_verbosity(absl_logging.ERROR)
  for name in ("jax._src.xla_bridge", "tensorflow"):
    logging.getLogger(name).setLevel(logging.ERROR)
