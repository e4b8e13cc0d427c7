"""Checkpoint formats: Hugging Face safetensors, T5X, our own runs, method exports.

`load_pretrained(path)` recognises the format of a folder and returns
`(T5Config, params)` with params as nested dicts of float32 numpy arrays in T5X's tree.
"""
from __future__ import annotations

import pathlib
from typing import Any, Callable

from prompt_tuning.io import hf, runs, t5x
from prompt_tuning.io.errors import CheckpointError
from prompt_tuning.io.exports import fingerprint, load_export, save_export
from prompt_tuning.io.hf import read_hf_checkpoint, write_hf_checkpoint
from prompt_tuning.io.params import expected_shapes, validate_params
from prompt_tuning.io.prompts import load_prompt_npy, save_prompt_npy
from prompt_tuning.io.t5x import read_t5x_checkpoint
from prompt_tuning.models.config import T5Config

__all__ = [
    "CheckpointError", "expected_shapes", "fingerprint", "load_export", "load_pretrained",
    "load_prompt_npy", "read_hf_checkpoint", "read_t5x_checkpoint", "register_format",
    "save_export", "save_prompt_npy", "validate_params", "write_hf_checkpoint",
]

Reader = Callable[[pathlib.Path], "tuple[T5Config, dict[str, Any]]"]
# (name, detect(path) -> bool, read(path) -> (config, params)), tried in order.
_FORMATS: list[tuple[str, Callable[[pathlib.Path], bool], Reader]] = [
    ("prompt_tuning training run (MODEL_DIR with config.json and checkpoints/<step>/)",
     runs.is_model_dir, runs.read_orbax_checkpoint),
    ("Hugging Face (config.json + model.safetensors)",
     lambda p: (p / hf.CONFIG_FILE).is_file(), read_hf_checkpoint),
    ("T5X (checkpoint_<step>/checkpoint)", t5x.is_t5x_dir, read_t5x_checkpoint),
]
# Files by which an orbax checkpoint (our own training's format) is recognised.
_ORBAX_MARKERS = ("_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt")


def register_format(name: str, detect: Callable[[pathlib.Path], bool], read: Reader) -> None:
  """Adds a format to `load_pretrained`, tried before the built-in ones."""
  _FORMATS.insert(0, (name, detect, read))


def _looks_like_orbax(path: pathlib.Path) -> bool:
  return any((d / m).exists() for d in (path, *path.glob("*")) if d.is_dir()
             for m in _ORBAX_MARKERS)


def load_pretrained(path) -> tuple[T5Config, dict[str, Any]]:
  """Reads a pretrained T5 from a Hugging Face or T5X folder: `(T5Config, params)`.

  The tree is checked against the config before it is returned; any problem is a
  `CheckpointError` that names the file or tensor at fault. Our own full-model training
  runs (pretraining, LM adaptation) load too.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise CheckpointError(f"checkpoint path {path} does not exist")
  if path.is_file():
    if path.name == t5x.CHECKPOINT_FILE:
      return read_t5x_checkpoint(path.parent)
    raise CheckpointError(f"{path} is a file; pass the checkpoint folder (for Hugging Face the "
                          "folder with config.json, for T5X the checkpoint_<step> folder)")
  for _, detect, read in _FORMATS:
    if detect(path):
      config, params = read(path)
      validate_params(config, params)
      return config, params
  if _looks_like_orbax(path):
    raise CheckpointError(f"{path} looks like an orbax checkpoint, but not one of our "
                          "training runs (MODEL_DIR with config.json and checkpoints/<step>/); "
                          "call prompt_tuning.io.register_format to read other layouts")
  entries = sorted(p.name for p in path.iterdir())
  shown = ", ".join(entries[:10]) + (f", ... ({len(entries)} entries)" if len(entries) > 10
                                     else "")
  raise CheckpointError(f"{path} is not a checkpoint we can read. Looked for: "
                        + "; ".join(name for name, _, _ in _FORMATS)
                        + f". The folder holds: {shown or 'nothing'}")
