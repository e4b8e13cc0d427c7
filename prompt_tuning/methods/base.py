"""The `Method` seam: one object says what trains, how it starts and what ships.

A method builds the model it trains on (a frozen `T5` with one of the model's seams
filled: input embeddings, per-layer keys/values), creates its parameters seeing the frozen
weights, names the arrays a user ships, and reads them back onto a model. Training
(the trainable/frozen split, the optimiser state), checkpoints, `export_prompt`, eval
and infer ask the method; none of them names a method's parameter path.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from prompt_tuning.io.errors import CheckpointError
from prompt_tuning.models.config import T5Config
from prompt_tuning.models.network import T5

Params = dict[str, Any]
Arrays = dict[str, np.ndarray]

# The T5Config fields an export depends on: another value is another model.
ARCHITECTURE = ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim",
                "num_encoder_layers", "num_decoder_layers", "mlp_activations",
                "logits_via_embedding", "relative_attention_num_buckets",
                "relative_attention_max_distance")


class Method(abc.ABC):
  """A parameter-efficient tuning method on a frozen T5 (see the module docstring).

  Subclasses are frozen dataclasses whose JSON-able fields are `settings()`; they set
  `name` and `trainable` (full-match regexes over `a/b/c` parameter paths).
  """
  name: ClassVar[str]
  trainable: ClassVar[tuple[str, ...]]
  export_needs_config: ClassVar[bool] = True  # False: `export` reads the arrays alone

  @abc.abstractmethod
  def build_model(self, config: T5Config) -> T5:
    """The frozen T5 with this method's seam filled, as it trains."""

  @abc.abstractmethod
  def init_params(self, model: T5, frozen_params: Params, rng: Any) -> Params:
    """The trainable tree (boxed with logical axes), created seeing the frozen weights."""

  @abc.abstractmethod
  def export(self, params: Params, config: T5Config) -> Arrays:
    """The arrays a user ships, by name, from the trained (host numpy) tree."""

  @abc.abstractmethod
  def load(self, arrays: Arrays, config: T5Config, where: str) -> tuple[T5, Params]:
    """`(model, params)` that compute with exported `arrays`; `where` names the file."""

  @classmethod
  @abc.abstractmethod
  def owns(cls, params: Params) -> bool:
    """Whether a trainable tree read from a checkpoint is this method's."""

  @classmethod
  def from_params(cls, params: Params) -> "Method":
    """This method with the settings a trained tree shows (a checkpoint without config)."""
    del params
    return cls()

  def check_lengths(self, input_length: int, max_encoder_length: Optional[int]) -> None:
    """Refuses inputs the method makes too long (e.g. a prompt plus the inputs)."""
    del input_length, max_encoder_length

  def task(self, name: str) -> str:
    """The task this method reads for task `name` (P-tuning's template: a templated copy)."""
    return name

  def encode_inputs(self, vocabulary: Any, text: str) -> list[int]:
    """The input token ids of one text (infer's inputs), without EOS."""
    return [int(i) for i in vocabulary.encode(text)]

  def export_readers(self) -> tuple[str, ...]:
    """Other methods that read this method's export as their own (sidecar `readers`)."""
    return ()

  def settings(self) -> dict[str, Any]:
    """The fields that fix the trained shapes, as JSON values (config.json, sidecars)."""
    out = {}
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if isinstance(value, (bool, int, float, str, type(None))):
        out[field.name] = value
      elif isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
        out[field.name] = list(value)
    return out

  def describe(self) -> dict[str, Any]:
    return {"name": self.name, "settings": self.settings()}

  def sidecar(self, config: T5Config, frozen_fingerprint: Optional[str],
              step: Optional[int] = None) -> dict[str, Any]:
    """What an export's JSON sidecar records beside the arrays' shapes."""
    out = {"method": self.name, "settings": self.settings(), "t5_config": config.to_dict(),
           "frozen_fingerprint": frozen_fingerprint, "step": step}
    if self.export_readers():
      out["readers"] = list(self.export_readers())
    return out

  def check_sidecar(self, sidecar: Optional[dict[str, Any]], config: T5Config,
                    frozen_fingerprint: Optional[str], where: str) -> None:
    """Refuses an export made by another method or on another model."""
    if sidecar is None:
      return
    if sidecar.get("method") != self.name and self.name not in sidecar.get("readers", ()):
      raise CheckpointError(
          f"{where} was exported by {sidecar.get('method')!r} but this run uses {self.name!r}: "
          f"add the method's gin file (gin/methods/{sidecar.get('method')}.gin) or pick "
          "another file")
    saved = sidecar.get("t5_config") or {}
    differ = [f"{f} {saved[f]} vs {getattr(config, f)}" for f in ARCHITECTURE
              if f in saved and _plain(saved[f]) != _plain(getattr(config, f))]
    if differ:
      raise CheckpointError(
          f"{where} was trained on another model (file vs INITIAL_CHECKPOINT_PATH: "
          f"{', '.join(differ)}); load it onto the model it was trained on")
    saved_print = sidecar.get("frozen_fingerprint")
    if saved_print and frozen_fingerprint and saved_print != frozen_fingerprint:
      raise CheckpointError(
          f"{where} was trained on frozen weights with fingerprint {saved_print}, but "
          f"INITIAL_CHECKPOINT_PATH has {frozen_fingerprint}: same shape, other weights. "
          "Load it onto the checkpoint it was trained on")


def _plain(value):
  return list(value) if isinstance(value, (tuple, list)) else value


def check_array(arrays: Arrays, name: str, shape: Sequence[Optional[int]], where: str
                ) -> np.ndarray:
  """`arrays[name]`, a float array whose shape fits `shape` (None: any size)."""
  if name not in arrays:
    raise CheckpointError(f"{where} has no array {name!r}; it holds {sorted(arrays)}")
  value = np.asarray(arrays[name])
  fits = value.ndim == len(shape) and all(s is None or s == v for s, v in zip(shape, value.shape))
  if not fits or value.dtype.kind != "f":
    want = tuple("any" if s is None else s for s in shape)
    raise CheckpointError(f"{where}: {name} has shape {value.shape} ({value.dtype}) but the "
                          f"model expects a float array of shape {want}")
  return value
