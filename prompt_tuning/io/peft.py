"""Hugging Face PEFT adapters: a `[p, d]` prompt as a prompt-tuning adapter, and back.

    DIR/adapter_config.json         PromptTuningConfig: PROMPT_TUNING, SEQ_2_SEQ_LM
    DIR/adapter_model.safetensors   prompt_embeddings [s * p, d]

`peft.PeftModel.from_pretrained(T5ForConditionalGeneration..., DIR)` prepends the first
`p` rows to the encoder's input embeddings, as our prompt (placement `prefix`) does. We
write `s = num_transformer_submodules = 1` (our prompt is the encoder's alone); PEFT's
own seq2seq default is 2, whose second `p` rows it saves but never uses, so reading
takes the first `p` rows of either layout. Any method whose export is one computed
`[p, d]` prompt (prompt tuning, P-tuning) ships this way.

Prefix tuning does not: PEFT 0.21's T5 prefix tuning reaches neither the encoder's
self-attention nor cross-attention (it empties the cross-attention cache), and its
decoder self-attention prefix gets relative position bias as positions `0..p-1` where
ours has none (`models/network.py`); `refuse_prefixes` says so.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Optional, Sequence

import numpy as np

from prompt_tuning.io.errors import CheckpointError
from prompt_tuning.io.files import atomic_directory
from prompt_tuning.io.hf import _read_json as read_json  # pylint: disable=protected-access
from prompt_tuning.models.config import T5Config

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PROMPT_KEY = "prompt_embeddings"
PROMPT_TUNING = "PROMPT_TUNING"
SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"

# Why PEFT cannot carry each of prefix tuning's attention kinds (models.KV_PREFIX_KINDS).
PREFIX_KINDS_PEFT_LACKS = {
    "encoder": "PEFT's T5 prefix tuning never reaches encoder self-attention",
    "decoder": ("PEFT gives decoder self-attention prefixes T5's relative position bias "
                "(as positions 0..p-1), ours have none, so its logits would differ"),
    "cross": "PEFT empties the cross-attention cache, dropping cross-attention prefixes",
}


def prompt_tuning_config(prompt_length: int, config: T5Config,
                         base_model: Optional[str]) -> dict[str, Any]:
  """The `adapter_config.json` of a `[prompt_length, emb_dim]` encoder prompt."""
  return {
      "peft_type": PROMPT_TUNING, "task_type": SEQ_2_SEQ_LM,
      "num_virtual_tokens": int(prompt_length), "token_dim": config.emb_dim,
      "num_transformer_submodules": 1, "num_attention_heads": config.num_heads,
      "num_layers": config.num_encoder_layers, "prompt_tuning_init": "RANDOM",
      "prompt_tuning_init_text": None, "tokenizer_name_or_path": None,
      "tokenizer_kwargs": None, "base_model_name_or_path": base_model, "revision": None,
      "inference_mode": True, "auto_mapping": None, "modules_to_save": None,
  }


def write_peft_prompt(path, prompt, config: T5Config, base_model: Optional[str],
                      overwrite: bool = False) -> pathlib.Path:
  """Writes the folder `DIR` of a PEFT prompt-tuning adapter holding `prompt` `[p, d]`.

  The folder appears whole or not at all; `base_model` (the Hugging Face folder of the
  frozen model) goes to `base_model_name_or_path`.
  """
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  prompt = np.asarray(prompt)
  if prompt.ndim != 2 or prompt.dtype.kind != "f":
    raise CheckpointError(f"a PEFT prompt-tuning adapter holds a float [length, embed] "
                          f"prompt, got shape {prompt.shape} ({prompt.dtype})")
  if prompt.shape[1] != config.emb_dim:
    raise CheckpointError(f"the prompt is {prompt.shape[1]} wide but the model's embedding "
                          f"is {config.emb_dim} wide")
  text = json.dumps(prompt_tuning_config(prompt.shape[0], config, base_model), indent=2,
                    sort_keys=True)
  path = pathlib.Path(path)
  with atomic_directory(path, overwrite=overwrite) as tmp:
    (tmp / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
    save_file({PROMPT_KEY: np.ascontiguousarray(prompt, np.float32)},
              str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
  return path


def is_peft_adapter(path) -> bool:
  return (pathlib.Path(path) / CONFIG_FILE).is_file()


def read_peft_config(path) -> dict[str, Any]:
  """The `adapter_config.json` of the adapter folder `path`, as a dict."""
  path = pathlib.Path(path)
  file = path / CONFIG_FILE
  if not file.is_file():
    what = "does not exist" if not path.exists() else f"holds no {CONFIG_FILE}"
    raise CheckpointError(f"PEFT adapter folder {path} {what}: pass the folder "
                          "save_pretrained wrote (adapter_config.json + "
                          "adapter_model.safetensors)")
  return read_json(file)


def read_peft_prompt(path, width: Optional[int] = None) -> np.ndarray:
  """The encoder prompt `[p, d]` (float32) of a PEFT prompt-tuning adapter folder.

  Either layout: `num_transformer_submodules` 1 (`[p, d]`) or 2 (`[2p, d]`, PEFT's
  seq2seq default; its decoder half is unused by PEFT and dropped). `width`, if given, is
  the model's embedding width the prompt must have.
  """
  path = pathlib.Path(path)
  config = read_peft_config(path)
  kind = config.get("peft_type")
  if kind != PROMPT_TUNING:
    raise CheckpointError(
        f"{path} is a PEFT {kind} adapter, not PROMPT_TUNING: only a prompt-tuning "
        "adapter's prompt can start or be evaluated as a prompt here")
  length = config.get("num_virtual_tokens")
  default = 2 if config.get("task_type") == SEQ_2_SEQ_LM else 1
  submodules = config.get("num_transformer_submodules") or default
  if not isinstance(length, int) or length < 1 or submodules not in (1, 2):
    raise CheckpointError(f"{path / CONFIG_FILE}: num_virtual_tokens {length!r} and "
                          f"num_transformer_submodules {submodules!r} must be a positive "
                          "integer and 1 or 2")
  prompt = _read_weights(path)
  if prompt.ndim != 2 or prompt.shape[0] != submodules * length:
    raise CheckpointError(f"{path / WEIGHTS_FILE}: {PROMPT_KEY} has shape {prompt.shape}, "
                          f"but {CONFIG_FILE} says {length} virtual tokens for "
                          f"{submodules} transformer submodule(s) ({submodules * length} rows)")
  token_dim = config.get("token_dim")
  if token_dim is not None and token_dim != prompt.shape[1]:
    raise CheckpointError(f"{path}: {PROMPT_KEY} is {prompt.shape[1]} wide but "
                          f"{CONFIG_FILE} says token_dim {token_dim}")
  if width is not None and prompt.shape[1] != width:
    raise CheckpointError(f"the PEFT prompt {path} is {prompt.shape[1]} wide but the "
                          f"model's embedding is {width} wide: it was trained for another "
                          "model")
  return np.asarray(prompt[:length], np.float32)


def _read_weights(path: pathlib.Path) -> np.ndarray:
  file = path / WEIGHTS_FILE
  if not file.is_file():
    other = " (only safetensors are read, not adapter_model.bin)" if (
        path / "adapter_model.bin").is_file() else ""
    raise CheckpointError(f"{path} has no {WEIGHTS_FILE}{other}")
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  try:
    with safe_open(str(file), framework="numpy") as f:
      names = list(f.keys())
      if PROMPT_KEY not in names:
        raise CheckpointError(f"{file} holds {sorted(names)[:6]}, not {PROMPT_KEY}")
      value = f.get_tensor(PROMPT_KEY)
  except CheckpointError:
    raise
  except Exception as e:  # safetensors raises its own untyped errors on bad files.
    raise CheckpointError(f"cannot read {file} as safetensors: {e}") from None
  if value.dtype.kind != "f":
    raise CheckpointError(f"{file}: {PROMPT_KEY} is {value.dtype}, not float")
  return value


def refuse_prefixes(attention: Sequence[str]) -> CheckpointError:
  """The error for a prefix-tuning export asked for as PEFT: each kind and why."""
  reasons = "; ".join(f"{kind}: {PREFIX_KINDS_PEFT_LACKS[kind]}" for kind in attention)
  return CheckpointError(
      f"PEFT cannot express this prefix-tuning run's attention kinds {', '.join(attention)} "
      f"({reasons}). Export the .npz instead (--format=numpy), or train prompt tuning for a "
      "PEFT adapter")


def check_base_model(path, config: T5Config) -> None:
  """Refuses a `base_model_name_or_path` that is not a Hugging Face T5 of `config`'s shape."""
  file = pathlib.Path(path) / "config.json"
  if not file.is_file():
    raise CheckpointError(f"the base model {path} is not a Hugging Face folder (no "
                          "config.json): write one with python -m "
                          "prompt_tuning.scripts.convert_checkpoint and pass it as --base_model")
  hf = read_json(file)
  weights = ("model.safetensors", "model.safetensors.index.json")
  if not any((pathlib.Path(path) / w).is_file() for w in weights):
    raise CheckpointError(f"the base model {path} holds no model.safetensors: not a Hugging "
                          "Face model folder")
  layers = hf.get("num_layers")
  ours = {"d_model": config.emb_dim, "num_heads": config.num_heads, "d_kv": config.head_dim,
          "num_layers": config.num_encoder_layers,
          "num_decoder_layers": config.num_decoder_layers, "vocab_size": config.vocab_size}
  theirs = {**{k: hf.get(k) for k in ours}, "num_decoder_layers":
            hf.get("num_decoder_layers") or layers}
  differ = [f"{k} {theirs[k]} vs {v}" for k, v in ours.items() if theirs[k] != v]
  if differ:
    raise CheckpointError(f"the base model {path} is not the model the prompt was trained "
                          f"on ({file} vs the run: {', '.join(differ)}); pass --base_model "
                          "naming the Hugging Face export of the run's base")
