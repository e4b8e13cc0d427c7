"""`T5Config`: every hyperparameter of a T5 in one frozen dataclass, plus named presets."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

_ACTIVATIONS = ("relu", "gelu", "gelu_exact", "linear", "silu")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyperparameters of an encoder-decoder T5.

  T5 1.0 is `mlp_activations=('relu',)` with `logits_via_embedding=True` (the tied
  output layer, scaled by `emb_dim**-0.5`); T5.1.1 and the LM-adapted checkpoints are
  `('gelu', 'linear')` (a gated MLP with the tanh-approximate gelu) with a separate
  `decoder/logits_dense` kernel.
  """

  vocab_size: int
  emb_dim: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  num_encoder_layers: int
  num_decoder_layers: int
  mlp_activations: tuple[str, ...] = ("gelu", "linear")
  dropout_rate: float = 0.1
  logits_via_embedding: bool = False
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  dtype: str = "float32"
  float32_attention_logits: bool = True
  layer_norm_epsilon: float = 1e-6
  remat: bool = False

  def __post_init__(self):
    # gin and JSON hand us lists; a frozen dataclass must hold hashable tuples.
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    for field in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim",
                  "num_encoder_layers", "num_decoder_layers",
                  "relative_attention_num_buckets", "relative_attention_max_distance"):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"T5Config.{field} must be a positive integer, got {value!r}")
    unknown = [a for a in self.mlp_activations if a not in _ACTIVATIONS]
    if not self.mlp_activations or unknown:
      raise ValueError(f"T5Config.mlp_activations={self.mlp_activations!r}: each must be "
                       f"one of {_ACTIVATIONS}")
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ValueError(f"T5Config.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate}")

  @property
  def activation_dtype(self) -> Any:
    return jnp.dtype(self.dtype)

  def replace(self, **changes) -> "T5Config":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["mlp_activations"] = list(self.mlp_activations)
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "T5Config":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"unknown T5Config fields {unknown}; known: {sorted(names)}")
    return cls(**d)


def _t5_1_0(emb, heads, mlp, layers, head_dim=64):
  return dict(vocab_size=32128, emb_dim=emb, num_heads=heads, head_dim=head_dim, mlp_dim=mlp,
              num_encoder_layers=layers, num_decoder_layers=layers,
              mlp_activations=("relu",), logits_via_embedding=True)


def _t5_1_1(emb, heads, mlp, layers, head_dim=64):
  return dict(vocab_size=32128, emb_dim=emb, num_heads=heads, head_dim=head_dim, mlp_dim=mlp,
              num_encoder_layers=layers, num_decoder_layers=layers,
              mlp_activations=("gelu", "linear"), logits_via_embedding=False)


_T5_1_1 = {
    "small": _t5_1_1(512, 6, 1024, 8),
    "base": _t5_1_1(768, 12, 2048, 12),
    "large": _t5_1_1(1024, 16, 2816, 24),
    "xl": _t5_1_1(2048, 32, 5120, 24),
    "xxl": _t5_1_1(4096, 64, 10240, 24),
}

PRESETS: dict[str, dict[str, Any]] = {
    "t5_1_0_small": _t5_1_0(512, 8, 2048, 6),
    "t5_1_0_base": _t5_1_0(768, 12, 3072, 12),
    "t5_1_0_large": _t5_1_0(1024, 16, 4096, 24),
    "t5_1_0_3B": _t5_1_0(1024, 32, 16384, 24, head_dim=128),
    "t5_1_0_11B": _t5_1_0(1024, 128, 65536, 24, head_dim=128),
    **{f"t5_1_1_{k}": v for k, v in _T5_1_1.items()},
    # The LM-adapted checkpoints share T5.1.1's architecture; only their weights differ.
    **{f"t5_1_1_lm100k_{k}": v for k, v in _T5_1_1.items()},
    # The shape of `../shared/reference/t5x_t5_1_1_tiny`, written by T5X's tests.
    "t5_1_1_tiny": dict(vocab_size=32128, emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8,
                        num_encoder_layers=2, num_decoder_layers=2,
                        mlp_activations=("gelu", "linear"), logits_via_embedding=False,
                        relative_attention_num_buckets=4),
    # The embedded default's size: about 6M parameters with an 8k vocabulary, so the
    # span-corruption and LM-adapted checkpoints fit in 30 MB together in bfloat16.
    "t5_1_1_mini": dict(vocab_size=8192, emb_dim=192, num_heads=3, head_dim=64, mlp_dim=512,
                        num_encoder_layers=3, num_decoder_layers=3,
                        mlp_activations=("gelu", "linear"), logits_via_embedding=False),
    # Half the embedded size (about 3M parameters, 0.4x its compute per token): the
    # README's model-size comparison.
    "t5_1_1_micro": dict(vocab_size=8192, emb_dim=128, num_heads=2, head_dim=64, mlp_dim=384,
                         num_encoder_layers=2, num_decoder_layers=2,
                         mlp_activations=("gelu", "linear"), logits_via_embedding=False),
    "tiny": dict(vocab_size=128, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                 num_encoder_layers=2, num_decoder_layers=2,
                 mlp_activations=("gelu", "linear"), logits_via_embedding=False),
}


def get_config(name: str, **overrides) -> T5Config:
  """Returns the preset `name` (see `PRESETS`), with any field overridden."""
  if name not in PRESETS:
    raise ValueError(f"unknown T5 preset {name!r}; choose one of {sorted(PRESETS)}")
  return T5Config(**{**PRESETS[name], **overrides})
