"""T5X checkpoints, read with msgpack, gzip and numpy alone (no t5x, tensorstore or zarr).

A T5X checkpoint folder `checkpoint_<step>/` holds a msgpack file `checkpoint` with the
train state (`{'version': ..., 'optimizer': {'target': params, 'state': ...}}`). Small
arrays sit in it inline as flax's msgpack extension (type 1: a packed
`(shape, dtype name, raw bytes)`); large ones are replaced by a tensorstore spec whose
`kvstore.path` names a zarr v2 folder beside it, e.g.
`target.encoder.layers_0.attention.query.kernel/` with a `.zarray` header and one
(usually gzip-compressed) file per chunk, named `0.0`, `1.0`, ...
"""
from __future__ import annotations

import gzip
import itertools
import json
import math
import pathlib
import re
import zlib
from typing import Any

import msgpack
import numpy as np

from prompt_tuning.io import params as params_lib
from prompt_tuning.io.errors import CheckpointError
from prompt_tuning.models.config import T5Config

CHECKPOINT_FILE = "checkpoint"
_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")
_EXT_NDARRAY, _EXT_NPSCALAR = 1, 3


def _dtype(name: str) -> np.dtype:
  """A numpy dtype from a flax or zarr dtype name, bfloat16 included."""
  if name in ("bfloat16", "<bfloat16", ">bfloat16"):
    import ml_dtypes  # pylint: disable=import-outside-toplevel
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(name)


def find_checkpoint_dir(path) -> pathlib.Path:
  """`path` itself if it holds a `checkpoint` file, else its latest `checkpoint_<step>/`."""
  path = pathlib.Path(path)
  if path.is_file() and path.name == CHECKPOINT_FILE:
    return path.parent
  if not path.is_dir():
    raise CheckpointError(f"{path} does not exist" if not path.exists() else
                          f"{path} is not a T5X checkpoint folder or its '{CHECKPOINT_FILE}' file")
  if (path / CHECKPOINT_FILE).is_file():
    return path
  steps = []
  for child in path.iterdir():
    match = _STEP_DIR.match(child.name)
    if match and (child / CHECKPOINT_FILE).is_file():
      steps.append((int(match.group(1)), child))
  steps.sort()
  if not steps:
    raise CheckpointError(f"{path} is not a T5X checkpoint: it has no '{CHECKPOINT_FILE}' file "
                          "and no checkpoint_<step>/ folders holding one")
  return steps[-1][1]


def is_t5x_dir(path) -> bool:
  try:
    find_checkpoint_dir(path)
  except (CheckpointError, OSError):
    return False
  return True


# ----------------------------------------------------------------------------- zarr v2


def _decompress(data: bytes, compressor: dict[str, Any] | None, where: pathlib.Path) -> bytes:
  kind = (compressor or {}).get("id")
  try:
    if kind is None:
      return data
    if kind == "gzip":
      return gzip.decompress(data)
    if kind == "zlib":
      return zlib.decompress(data)
  except (OSError, zlib.error, EOFError) as e:
    raise CheckpointError(f"chunk {where} is corrupt: {e}") from None
  raise CheckpointError(f"{where.parent}: compressor {kind!r} is not supported (gzip, zlib or "
                        "none); re-save the checkpoint with T5X's default gzip compression")


def read_zarr(folder: pathlib.Path) -> np.ndarray:
  """Reads a zarr v2 array folder (`.zarray` plus one file per chunk) into numpy."""
  header_file = folder / ".zarray"
  try:
    header = json.loads(header_file.read_text(encoding="utf-8"))
    shape, chunks = tuple(header["shape"]), tuple(header["chunks"])
    dtype = _dtype(header["dtype"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"cannot read the zarr header {header_file}: {e}") from None
  if header.get("filters"):
    raise CheckpointError(f"{header_file}: zarr filters {header['filters']} are not supported")
  order = header.get("order", "C")
  separator = header.get("dimension_separator", ".")
  fill = header.get("fill_value")
  out = np.full(shape, 0 if fill is None else fill, dtype=dtype)
  grid = [range(math.ceil(s / c)) for s, c in zip(shape, chunks)]
  for index in itertools.product(*grid):
    chunk_file = folder / (separator.join(map(str, index)) if index else "0")
    if not chunk_file.is_file():
      continue  # zarr leaves out chunks that hold only the fill value.
    raw = _decompress(chunk_file.read_bytes(), header.get("compressor"), chunk_file)
    if len(raw) != math.prod(chunks) * dtype.itemsize:
      raise CheckpointError(f"chunk {chunk_file} holds {len(raw)} bytes, expected "
                            f"{math.prod(chunks) * dtype.itemsize} for chunks {chunks} of {dtype}")
    block = np.frombuffer(raw, dtype=dtype).reshape(chunks, order=order)
    region = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks, shape))
    out[region] = block[tuple(slice(0, r.stop - r.start) for r in region)]
  return out


# ----------------------------------------------------------------------------- msgpack tree


def _from_ext(ext: msgpack.ExtType, name: str) -> np.ndarray:
  if ext.code == _EXT_NDARRAY:
    shape, dtype_name, buffer = msgpack.unpackb(ext.data, raw=True)
    return np.frombuffer(buffer, dtype=_dtype(dtype_name.decode())).reshape(shape)
  if ext.code == _EXT_NPSCALAR:
    dtype_name, buffer = msgpack.unpackb(ext.data, raw=True)
    return np.frombuffer(buffer, dtype=_dtype(dtype_name.decode()))[0]
  raise CheckpointError(f"{name}: unknown msgpack extension type {ext.code} (complex numbers "
                        "and other types are not T5 parameters)")


def _zarr_folder(spec: dict[str, Any], folder: pathlib.Path, name: str) -> pathlib.Path:
  """The zarr folder a tensorstore spec points at, relative to the checkpoint folder."""
  kvstore = spec.get("kvstore") if isinstance(spec.get("kvstore"), dict) else {}
  parts = [p for p in (kvstore.get("path"), spec.get("path")) if isinstance(p, str) and p]
  candidates = []
  if parts:
    candidates.append(folder.joinpath(*(p.lstrip("/") for p in parts)))
    candidates.append(folder / pathlib.PurePosixPath(parts[-1].rstrip("/")).name)
  candidates.append(folder / ("target." + name.replace("/", ".")))
  for candidate in candidates:
    if (candidate / ".zarray").is_file():
      return candidate
  raise CheckpointError(f"tensor {name} is stored outside the msgpack file, but none of "
                        f"{[str(c) for c in candidates]} holds a zarr array (.zarray); copy "
                        "the whole checkpoint folder, not only its 'checkpoint' file")


def _leaf(value: Any, folder: pathlib.Path, name: str) -> np.ndarray:
  if isinstance(value, msgpack.ExtType):
    return _from_ext(value, name)
  if isinstance(value, dict) and "__msgpack_chunked_array__" in value:
    chunks = value["chunks"]
    flat = np.concatenate([_from_ext(chunks[k], name).ravel()
                           for k in sorted(chunks, key=int)])
    return flat.reshape([value["shape"][k] for k in sorted(value["shape"], key=int)])
  if isinstance(value, dict) and "driver" in value:
    return read_zarr(_zarr_folder(value, folder, name))
  if isinstance(value, str) and (folder / value / ".zarray").is_file():
    return read_zarr(folder / value)
  if isinstance(value, (int, float)):
    return np.asarray(value)
  raise CheckpointError(f"tensor {name}: cannot read a {type(value).__name__} leaf "
                        f"({str(value)[:80]!r})")


def _walk(tree: Any, folder: pathlib.Path, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict) and not ("driver" in tree or "__msgpack_chunked_array__" in tree):
    return {k: _walk(v, folder, f"{prefix}{k}/") for k, v in tree.items()}
  return np.asarray(_leaf(tree, folder, prefix.rstrip("/")), dtype=np.float32)


def read_t5x_params(path) -> dict[str, Any]:
  """The model parameters (`optimizer/target`) of a T5X checkpoint, float32 numpy arrays."""
  folder = find_checkpoint_dir(path)
  file = folder / CHECKPOINT_FILE
  data = file.read_bytes()
  if data.startswith(b"model_checkpoint_path"):
    raise CheckpointError(f"{folder} is a TensorFlow (Mesh TensorFlow) checkpoint, not a T5X "
                          "one; convert it with T5X's convert_tf_checkpoint first")
  try:
    state = msgpack.unpackb(data, raw=False, strict_map_key=False)
  except (OSError, ValueError, msgpack.UnpackException) as e:
    raise CheckpointError(f"cannot read {file} as a msgpack T5X checkpoint: {e}") from None
  if not isinstance(state, dict):
    raise CheckpointError(f"{file} does not hold a T5X train state (a msgpack map)")
  optimizer = state.get("optimizer")
  target = optimizer.get("target") if isinstance(optimizer, dict) else state.get("target")
  if not isinstance(target, dict):
    raise CheckpointError(f"{file} has no 'optimizer/target' parameter tree; its top-level "
                          f"keys are {sorted(state)}")
  return _walk(target, folder)


def infer_config(params: dict[str, Any], where="the checkpoint") -> T5Config:
  """The `T5Config` a T5X parameter tree implies, from its shapes.

  A gated MLP (`wi_0`, `wi_1`) is taken to be T5.1.1's `('gelu', 'linear')`; a single
  `wi` is T5 1.0's `('relu',)`. `relative_attention_max_distance` is not in the shapes
  and keeps its default (128, as in every public T5).
  """
  flat = params_lib.flatten(params)
  need = ["token_embedder/embedding", "encoder/relpos_bias/rel_embedding",
          "encoder/layers_0/attention/query/kernel", "encoder/layers_0/mlp/wo/kernel"]
  missing = [n for n in need if n not in flat]
  if missing:
    raise CheckpointError(f"{where} is not a T5 in T5X's layout: it lacks {missing} "
                          f"(top-level parameters: {sorted(params)})")
  for n in need:
    if np.ndim(flat[n]) != 2:
      raise CheckpointError(f"{where}: {n} has shape {np.shape(flat[n])}, expected 2-D (scanned "
                            "or 3-D attention kernels are not supported)")
  vocab, emb = np.shape(flat["token_embedder/embedding"])
  heads, buckets = np.shape(flat["encoder/relpos_bias/rel_embedding"])
  joined = np.shape(flat["encoder/layers_0/attention/query/kernel"])[1]
  if joined % heads:
    raise CheckpointError(f"{where}: attention width {joined} is not a multiple of "
                          f"{heads} heads (from relpos_bias/rel_embedding)")

  def count(stack):
    return len({m.group(1) for p in flat for m in [re.match(rf"{stack}/layers_(\d+)/", p)] if m})

  gated = "encoder/layers_0/mlp/wi_0/kernel" in flat
  try:
    return T5Config(
        vocab_size=vocab, emb_dim=emb, num_heads=heads, head_dim=joined // heads,
        mlp_dim=np.shape(flat["encoder/layers_0/mlp/wo/kernel"])[0],
        num_encoder_layers=count("encoder"), num_decoder_layers=count("decoder"),
        mlp_activations=("gelu", "linear") if gated else ("relu",),
        logits_via_embedding="decoder/logits_dense/kernel" not in flat,
        relative_attention_num_buckets=buckets)
  except ValueError as e:
    raise CheckpointError(f"{where}: {e}") from None


def read_t5x_checkpoint(path) -> tuple[T5Config, dict[str, Any]]:
  """Reads a T5X checkpoint: returns `(T5Config, params)`, float32 numpy arrays.

  `path` is a `checkpoint_<step>/` folder or a folder of them (the latest step is read).
  """
  params = read_t5x_params(path)
  config = infer_config(params, where=str(path))
  params_lib.validate_params(config, params)
  return config, params
