"""What a tuning method ships: named arrays in one file, and a JSON sidecar beside it.

    prompt.npy       one array (a `[p, d]` prompt)           np.load(path)
    prefixes.npz     several named arrays (`encoder/layers_0/key`, ...)
    <file>.json      the sidecar: method, array shapes, the model's T5Config and a
                     fingerprint of the frozen weights it was trained on

The sidecar lets a reader refuse a file loaded onto another model with a message
instead of silently wrong outputs. Files without one (written by hand, or before
sidecars existed) still load; only their shapes are checked.
"""
from __future__ import annotations

import hashlib
import io
import json
import pathlib
from typing import Any, Optional

import numpy as np

from prompt_tuning.io import peft
from prompt_tuning.io.errors import CheckpointError
from prompt_tuning.io.files import atomic_file
from prompt_tuning.io.prompts import load_prompt_npy, save_prompt_npy

SIDECAR_FORMAT = "prompt_tuning.export/1"
SINGLE, SEVERAL = ".npy", ".npz"


def sidecar_path(path) -> pathlib.Path:
  path = pathlib.Path(path)
  return path.with_name(path.name + ".json")


def suffix_for(arrays: dict[str, Any]) -> str:
  """`.npy` for one array, `.npz` for several."""
  return SINGLE if len(arrays) == 1 else SEVERAL


def save_export(path, arrays: dict[str, Any], sidecar: Optional[dict[str, Any]] = None
                ) -> pathlib.Path:
  """Writes `arrays` to `path` (`.npy` for one, `.npz` for several) and `path.json`.

  Each file appears whole or not at all. `sidecar` gets the arrays' shapes and dtypes
  added under `arrays`.
  """
  path = pathlib.Path(path)
  if not arrays:
    raise CheckpointError("nothing to export: the method returned no arrays")
  arrays = {name: np.asarray(value) for name, value in arrays.items()}
  if path.suffix != suffix_for(arrays):
    what = "one array" if len(arrays) == 1 else f"{len(arrays)} arrays ({_names(arrays)})"
    raise CheckpointError(f"this export holds {what}, which is written as "
                          f"{suffix_for(arrays)}; name the output {path.stem}"
                          f"{suffix_for(arrays)} instead of {path.name}")
  if len(arrays) == 1:
    save_prompt_npy(path, next(iter(arrays.values())))
  else:
    bad = [n for n, v in arrays.items() if v.dtype.kind != "f"]
    if bad:
      raise CheckpointError(f"exported arrays must be float, got {_names(bad)} of other dtypes")
    with atomic_file(path) as f:
      buffer = io.BytesIO()
      np.savez(buffer, **arrays)
      f.write(buffer.getvalue())
  if sidecar is not None:
    meta = {"format": SIDECAR_FORMAT, **sidecar, "arrays": {
        name: {"shape": list(v.shape), "dtype": str(v.dtype)} for name, v in arrays.items()}}
    with atomic_file(sidecar_path(path)) as f:
      f.write(json.dumps(meta, indent=1, sort_keys=True).encode("utf-8"))
  return path


def load_export(path) -> tuple[dict[str, np.ndarray], Optional[dict[str, Any]]]:
  """`(arrays by name, sidecar or None)` of a file `save_export` (or `np.save`) wrote.

  A `.npy` file's one array is named as its sidecar says, else `""`. A Hugging Face PEFT
  prompt-tuning adapter folder reads as its prompt, without a sidecar (`io.peft`).
  """
  path = pathlib.Path(path)
  if path.is_dir() and peft.is_peft_adapter(path):
    return {"": peft.read_peft_prompt(path)}, None
  sidecar = read_sidecar(path)
  if path.suffix == SEVERAL:
    if not path.is_file():
      raise CheckpointError(f"export file {path} does not exist")
    try:
      with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as e:
      raise CheckpointError(f"cannot read {path} as .npz: {e}") from None
  else:
    names = list((sidecar or {}).get("arrays", {})) or [""]
    arrays = {names[0]: load_prompt_npy(path)}
  if sidecar is not None:
    listed = sorted(sidecar.get("arrays", {}))
    if listed and listed != sorted(arrays):
      raise CheckpointError(f"{path} holds {_names(arrays)} but its sidecar "
                            f"{sidecar_path(path)} lists {_names(listed)}: they do not belong "
                            "together; export again")
  return arrays, sidecar


def read_sidecar(path) -> Optional[dict[str, Any]]:
  side = sidecar_path(path)
  if not side.is_file():
    return None
  try:
    data = json.loads(side.read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise CheckpointError(f"cannot read the sidecar {side} as JSON: {e}") from None
  if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
    raise CheckpointError(f"{side} is not an export sidecar (format {SIDECAR_FORMAT!r})")
  return data


def fingerprint(params: Any, samples: int = 4096) -> str:
  """A short hash of a parameter tree: every path, shape and dtype, and up to `samples`
  evenly spaced values of each array (as float32), so it is cheap for any model size."""
  import flax  # pylint: disable=import-outside-toplevel
  digest = hashlib.sha256()
  for path, value in sorted(flax.traverse_util.flatten_dict(params, sep="/").items()):
    value = np.asarray(value)
    flat = value.reshape(-1)
    if flat.size > samples:
      flat = flat[np.linspace(0, flat.size - 1, samples).astype(np.int64)]
    digest.update(f"{path}:{value.shape}:{value.dtype};".encode())
    digest.update(np.ascontiguousarray(flat, dtype=np.float32).tobytes())
  return "sha256:" + digest.hexdigest()[:32]


def _names(items, limit: int = 6) -> str:
  items = sorted(items)
  return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")
