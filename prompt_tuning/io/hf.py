"""Hugging Face T5 checkpoints (`config.json` + safetensors) to and from our T5X tree.

A Hugging Face `nn.Linear` stores its weight as `[out, in]`; our kernels are `[in, out]`,
so every kernel is transposed. Neither side scales attention logits by `head_dim**-0.5`,
so query and key kernels map unchanged. The relative position bias lives in block 0
(`[buckets, heads]`) and is shared by every layer, as our `relpos_bias/rel_embedding`
(`[heads, buckets]`) is.

The output layer: transformers 4.x ties `lm_head` to `shared` and scales the decoder
output by `d_model**-0.5` when `tie_word_embeddings` is true (the default); transformers
5.x always writes `tie_word_embeddings: true`, records the scaling as
`scale_decoder_outputs`, and keeps `lm_head.weight` separate when the file holds one
that differs from `shared.weight`. We read either: a tied, scaled output becomes
`logits_via_embedding=True`; anything else becomes a `decoder/logits_dense/kernel`
(with the scale folded into it in the rare untied-but-scaled case).

Loading an untied model (T5.1.1, our embedded models) in transformers 5 logs "The tied
weights mapping and config for this model specifies to tie shared.weight to
lm_head.weight, but both are present ... so we will NOT tie them": its `T5Config` sets
`tie_word_embeddings=True` whatever config.json says, and no file layout avoids the
message (transformers' own save/reload of such a model logs it too). The weights load
as written; a tied model loads silently.
"""
from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any, Iterator

import numpy as np

from prompt_tuning.io import params as params_lib
from prompt_tuning.io.errors import CheckpointError
from prompt_tuning.io.files import atomic_directory
from prompt_tuning.models.config import T5Config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
T5_MODEL_TYPES = ("t5", "mt5")

# feed_forward_proj -> our mlp_activations. Transformers maps 'gated-gelu' to gelu_new,
# the tanh approximation, which is our 'gelu'; its plain 'gelu' is the exact erf form.
_FEED_FORWARD = {
    "relu": ("relu",),
    "gated-relu": ("relu", "linear"),
    "gated-gelu": ("gelu", "linear"),
    "gated-gelu_new": ("gelu", "linear"),
    "gated-gelu_python": ("gelu_exact", "linear"),
    "gated-silu": ("silu", "linear"),
    "gated-swish": ("silu", "linear"),
    "gelu_new": ("gelu",),
    "gelu": ("gelu_exact",),
    "gelu_python": ("gelu_exact",),
    "silu": ("silu",),
    "swish": ("silu",),
}
_FEED_FORWARD_NAME = {}
for _name, _acts in _FEED_FORWARD.items():
  _FEED_FORWARD_NAME.setdefault(_acts, _name)

# Tensors transformers writes or accepts that carry nothing we need.
_IGNORED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
            "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight")
_LM_HEAD = "lm_head.weight"


def tensor_map(config: T5Config) -> list[tuple[str, str, bool]]:
  """`(hf_name, our_path, transposed)` for every tensor but the output layer."""
  table = [("shared.weight", "token_embedder/embedding", False)]
  attention = (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out"))
  mlp = [*params_lib.mlp_kernel_names(config), "wo"]

  def block(stack, i, sublayers):
    hf, ours = f"{stack}.block.{i}.layer", f"{stack}/layers_{i}"
    for j, (norm, kind, module) in enumerate(sublayers):
      table.append((f"{hf}.{j}.layer_norm.weight", f"{ours}/{norm}/scale", False))
      if kind == "mlp":
        table.extend((f"{hf}.{j}.DenseReluDense.{n}.weight", f"{ours}/mlp/{n}/kernel", True)
                     for n in mlp)
      else:
        table.extend((f"{hf}.{j}.{kind}.{a}.weight", f"{ours}/{module}/{b}/kernel", True)
                     for a, b in attention)

  for stack, layers, norm, sublayers in (
      ("encoder", config.num_encoder_layers, "encoder_norm",
       [("pre_attention_layer_norm", "SelfAttention", "attention"),
        ("pre_mlp_layer_norm", "mlp", "mlp")]),
      ("decoder", config.num_decoder_layers, "decoder_norm",
       [("pre_self_attention_layer_norm", "SelfAttention", "self_attention"),
        ("pre_cross_attention_layer_norm", "EncDecAttention", "encoder_decoder_attention"),
        ("pre_mlp_layer_norm", "mlp", "mlp")])):
    table.append((f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                  f"{stack}/relpos_bias/rel_embedding", True))
    for i in range(layers):
      block(stack, i, sublayers)
    table.append((f"{stack}.final_layer_norm.weight", f"{stack}/{norm}/scale", False))
  return table


# ----------------------------------------------------------------------------- reading


def _read_json(path: pathlib.Path) -> dict[str, Any]:
  try:
    data = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CheckpointError(f"cannot read {path}: {e}") from None
  if not isinstance(data, dict):
    raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}")
  return data


def _config_from_hf(hf: dict[str, Any], where: pathlib.Path) -> tuple[T5Config, bool]:
  """Our config (output layer not yet decided) and whether HF scales the decoder output."""
  model_type = hf.get("model_type")
  if model_type not in T5_MODEL_TYPES:
    raise CheckpointError(f"{where} describes a {model_type!r} model, not a T5: expected "
                          f"model_type in {T5_MODEL_TYPES} (architectures: "
                          f"{hf.get('architectures')})")
  feed_forward = hf.get("feed_forward_proj", "relu")
  if feed_forward not in _FEED_FORWARD:
    raise CheckpointError(f"{where}: feed_forward_proj {feed_forward!r} is not supported; "
                          f"known: {sorted(_FEED_FORWARD)}")
  # transformers 5 records the scale itself; 4.x derives it from tie_word_embeddings.
  scaled = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
  try:
    num_layers = hf.get("num_layers", 6)
    config = T5Config(
        vocab_size=hf.get("vocab_size", 32128), emb_dim=hf.get("d_model", 512),
        num_heads=hf.get("num_heads", 8), head_dim=hf.get("d_kv", 64),
        mlp_dim=hf.get("d_ff", 2048), num_encoder_layers=num_layers,
        num_decoder_layers=hf.get("num_decoder_layers") or num_layers,
        mlp_activations=_FEED_FORWARD[feed_forward],
        dropout_rate=float(hf.get("dropout_rate", 0.1)),
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
        logits_via_embedding=bool(scaled))
  except ValueError as e:
    raise CheckpointError(f"{where}: {e}") from None
  return config, bool(scaled)


class _Tensors:
  """The tensors of one or several safetensors files, read on demand as numpy arrays."""

  def __init__(self, folder: pathlib.Path):
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel
    self._open = safe_open
    index = folder / INDEX_FILE
    if (folder / WEIGHTS_FILE).is_file():
      files = [folder / WEIGHTS_FILE]
      self._where = {}
    elif index.is_file():
      weight_map = _read_json(index).get("weight_map")
      if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index} has no 'weight_map' object naming each tensor's file")
      self._where = {name: folder / file for name, file in weight_map.items()}
      files = sorted(set(self._where.values()))
    else:
      raise CheckpointError(
          f"{folder} has {CONFIG_FILE} but neither {WEIGHTS_FILE} nor {INDEX_FILE}; only "
          "safetensors are read (re-save a PyTorch .bin model with "
          "model.save_pretrained(path, safe_serialization=True))")
    for file in files:
      if not file.is_file():
        raise CheckpointError(f"{file} is missing (named by {index})")
      try:
        with safe_open(str(file), framework="numpy") as f:
          for name in f.keys():
            self._where.setdefault(name, file)
      except Exception as e:  # safetensors raises its own untyped errors on bad headers.
        raise CheckpointError(f"cannot read {file} as safetensors: {e}") from None

  def names(self) -> set[str]:
    return set(self._where)

  def shape(self, name: str) -> tuple[int, ...]:
    with self._open(str(self._where[name]), framework="numpy") as f:
      return tuple(f.get_slice(name).get_shape())

  def get(self, name: str) -> np.ndarray:
    with self._open(str(self._where[name]), framework="numpy") as f:
      return f.get_tensor(name)


def _output_layer(config: T5Config, scaled: bool, tensors: _Tensors):
  """Decides the output layer: returns `(config, logits_dense kernel or None)`."""
  names = tensors.names()
  if _LM_HEAD in names:
    head = tensors.get(_LM_HEAD)
    if head.shape != (config.vocab_size, config.emb_dim):
      raise CheckpointError(f"tensor {_LM_HEAD} has shape {head.shape}, but config.json implies "
                            f"{(config.vocab_size, config.emb_dim)}")
    tied = "shared.weight" in names and np.array_equal(head, tensors.get("shared.weight"))
  else:
    head, tied = None, True
  if tied and scaled:
    return config.replace(logits_via_embedding=True), None
  if head is None:  # Tied but unscaled: the embedding itself is the output kernel.
    head = tensors.get("shared.weight")
  kernel = np.ascontiguousarray(head.T, dtype=np.float32)
  if scaled:  # Untied but scaled: fold the d_model**-0.5 into the kernel.
    kernel *= np.float32(config.emb_dim ** -0.5)
  return config.replace(logits_via_embedding=False), kernel


def read_hf_checkpoint(path) -> tuple[T5Config, dict[str, Any]]:
  """Reads a transformers T5 folder: returns `(T5Config, params)`, float32 numpy arrays.

  The folder holds `config.json` and `model.safetensors` (or shards listed in
  `model.safetensors.index.json`), as `save_pretrained` writes them; bfloat16 and
  float16 tensors are converted to float32.
  """
  folder = pathlib.Path(path)
  if not (folder / CONFIG_FILE).is_file():
    raise CheckpointError(f"{folder} is not a Hugging Face checkpoint: no {CONFIG_FILE}")
  config, scaled = _config_from_hf(_read_json(folder / CONFIG_FILE), folder / CONFIG_FILE)
  tensors = _Tensors(folder)
  names = tensors.names()
  table = tensor_map(config)
  missing = [f"{hf} (-> {ours})" for hf, ours, _ in table if hf not in names]
  if missing:
    raise CheckpointError(f"{folder} lacks {len(missing)} tensor(s) that config.json implies:\n"
                          + params_lib.listing(missing))
  known = {hf for hf, _, _ in table} | {_LM_HEAD, *_IGNORED}
  unexpected = sorted(names - known)
  if unexpected:
    raise CheckpointError(f"{folder} holds {len(unexpected)} tensor(s) that a T5 with this "
                          "config.json does not have (another architecture, or a config.json "
                          "that does not match the weights?):\n" + params_lib.listing(unexpected))
  config, logits_kernel = _output_layer(config, scaled, tensors)

  expected = params_lib.expected_shapes(config)
  flat = {}
  for hf, ours, transposed in table:
    shape = tensors.shape(hf)
    want = expected[ours][::-1] if transposed else expected[ours]
    if shape != want:
      raise CheckpointError(f"tensor {hf} (-> {ours}) has shape {shape}, but config.json "
                            f"implies {want}")
    value = tensors.get(hf)
    flat[ours] = np.ascontiguousarray(value.T if transposed else value, dtype=np.float32)
  if logits_kernel is not None:
    flat["decoder/logits_dense/kernel"] = logits_kernel
  params = params_lib.unflatten(flat)
  params_lib.validate_params(config, params)
  return config, params


# ----------------------------------------------------------------------------- writing


def hf_config_dict(config: T5Config, dtype: str = "float32") -> dict[str, Any]:
  """The `config.json` transformers 4.x and 5.x both read as this model."""
  feed_forward = _FEED_FORWARD_NAME.get(config.mlp_activations)
  if feed_forward is None:
    raise CheckpointError(f"mlp_activations {config.mlp_activations} have no transformers "
                          f"equivalent; supported: {sorted(_FEED_FORWARD_NAME)}")
  tied = config.logits_via_embedding
  return {
      "architectures": ["T5ForConditionalGeneration"],
      "model_type": "t5",
      "vocab_size": config.vocab_size,
      "d_model": config.emb_dim,
      "d_kv": config.head_dim,
      "d_ff": config.mlp_dim,
      "num_layers": config.num_encoder_layers,
      "num_decoder_layers": config.num_decoder_layers,
      "num_heads": config.num_heads,
      "relative_attention_num_buckets": config.relative_attention_num_buckets,
      "relative_attention_max_distance": config.relative_attention_max_distance,
      "dropout_rate": config.dropout_rate,
      "layer_norm_epsilon": config.layer_norm_epsilon,
      "initializer_factor": 1.0,
      "feed_forward_proj": feed_forward,
      # 4.x reads both the tying and the output scale from tie_word_embeddings;
      # 5.x always ties unless lm_head.weight differs, and reads the scale separately.
      "tie_word_embeddings": tied,
      "scale_decoder_outputs": tied,
      "is_encoder_decoder": True,
      "use_cache": True,
      "pad_token_id": 0,
      "eos_token_id": 1,
      "decoder_start_token_id": 0,
      "dtype": dtype,
      "torch_dtype": dtype,
  }


def hf_state_dict(config: T5Config, params, dtype=np.float32) -> Iterator[tuple[str, np.ndarray]]:
  """Yields `(hf_name, array)` in transformers' layout, `lm_head.weight` when untied."""
  flat = params_lib.flatten(params)
  for hf, ours, transposed in tensor_map(config):
    value = np.asarray(flat[ours])
    yield hf, np.ascontiguousarray(value.T if transposed else value, dtype=dtype)
  if not config.logits_via_embedding:
    yield _LM_HEAD, np.ascontiguousarray(np.asarray(flat["decoder/logits_dense/kernel"]).T,
                                         dtype=dtype)


def _numpy_dtype(dtype) -> tuple[str, Any]:
  """`('bfloat16', ml_dtypes.bfloat16)` for `'bfloat16'`, `jnp.bfloat16` and the like."""
  import ml_dtypes  # pylint: disable=import-outside-toplevel
  choices = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
  try:
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
  except TypeError:
    name = None
  if name not in choices:
    raise CheckpointError(f"cannot write weights as {dtype!r}: choose float32, bfloat16 or "
                          "float16")
  return name, choices[name]


def write_hf_checkpoint(path, config: T5Config, params, dtype="float32", spiece_model=None,
                        overwrite: bool = False) -> pathlib.Path:
  """Writes a folder `T5ForConditionalGeneration.from_pretrained(path)` loads.

  Writes `config.json` and `model.safetensors` (weights cast to `dtype`: float32,
  bfloat16 or float16) and, if `spiece_model` is given, copies that SentencePiece model to
  `spiece.model`. Everything is written to a temporary folder beside `path` and renamed
  into place, so an interrupted write leaves no half-made `path`.
  """
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  params_lib.validate_params(config, params)
  dtype_name, np_dtype = _numpy_dtype(dtype)
  config_dict = hf_config_dict(config, dtype_name)
  if spiece_model is not None and not pathlib.Path(spiece_model).is_file():
    raise CheckpointError(f"SentencePiece model {spiece_model} does not exist")
  path = pathlib.Path(path)
  with atomic_directory(path, overwrite=overwrite) as tmp:
    (tmp / CONFIG_FILE).write_text(json.dumps(config_dict, indent=2) + "\n", encoding="utf-8")
    save_file(dict(hf_state_dict(config, params, np_dtype)), str(tmp / WEIGHTS_FILE),
              metadata={"format": "pt"})
    if spiece_model is not None:
      shutil.copyfile(spiece_model, tmp / "spiece.model")
  return path
