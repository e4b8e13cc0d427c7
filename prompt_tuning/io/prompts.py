"""Soft prompts as `.npy` files: `[prompt_length, embed]` float arrays."""
from __future__ import annotations

import pathlib

import numpy as np

from prompt_tuning.io.errors import CheckpointError
from prompt_tuning.io.files import atomic_file


def save_prompt_npy(path, array) -> pathlib.Path:
  """Writes `array` (numpy or jax) to `path` as `.npy`; the file appears whole or not at all."""
  value = np.asarray(array)
  if value.dtype.kind != "f":
    raise CheckpointError(f"a prompt must be a float array, got dtype {value.dtype}")
  path = pathlib.Path(path)
  with atomic_file(path) as f:
    np.save(f, value, allow_pickle=False)
  return path


def load_prompt_npy(path, expected_shape=None) -> np.ndarray:
  """Reads a prompt saved by `save_prompt_npy` (or `np.save`), checking its shape if asked.

  `expected_shape` may hold `None` for a dimension that can be anything, e.g.
  `(None, config.emb_dim)`.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f"prompt file {path} does not exist")
  try:
    value = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"cannot read prompt file {path} as .npy: {e}") from None
  if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
    raise CheckpointError(f"prompt file {path} must hold one float array, got "
                          f"{getattr(value, 'dtype', type(value).__name__)}")
  if not np.isfinite(value).all():
    bad = int(np.size(value) - np.isfinite(value).sum())
    raise CheckpointError(f"prompt file {path} holds {bad} NaN or infinite value(s); use a "
                          "prompt saved by a run that did not diverge")
  if expected_shape is not None:
    expected_shape = tuple(expected_shape)
    fits = len(expected_shape) == value.ndim and all(
        e is None or e == s for e, s in zip(expected_shape, value.shape))
    if not fits:
      raise CheckpointError(f"prompt file {path} has shape {value.shape} but the model expects "
                            f"{expected_shape}")
  return value
