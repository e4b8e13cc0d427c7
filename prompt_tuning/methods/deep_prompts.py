"""Deep prompts (P-tuning v2, Liu et al. 2022): trainable keys and values in every layer.

P-tuning v2's prompts are prefix tuning's per-layer key/value prefixes (the key/value
prefix seam) with the paper's other defaults, so this is `PrefixTuning` under another
name: prompts in every encoder layer's self-attention (`attention=('encoder',)`; add
`'decoder'` and `'cross'` for the decoder's self- and cross-attention), trained directly
(`reparameterize=False`, the paper's default for most tasks) or through prefix tuning's
MLP, lengths 20 to 100 in the paper. Parameters, export (`.npz` of every layer's keys and
values) and loading are prefix tuning's; the export's sidecar names both methods, so
prefix tuning's commands read it too.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Sequence

import gin

from prompt_tuning.methods.base import Params
from prompt_tuning.methods.prefix_tuning import PrefixTuning


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DeepPrompts(PrefixTuning):
  """Deep prompts; see the module docstring. Fields as `PrefixTuning`'s."""
  length: int = 20
  attention: Sequence[str] = ("encoder",)
  reparameterize: bool = False

  name: ClassVar[str] = "deep_prompts"
  macro: ClassVar[str] = "DEEP_PROMPT"

  def export_readers(self) -> tuple[str, ...]:
    return (PrefixTuning.name,)

  @classmethod
  def owns(cls, params: Params) -> bool:
    """Never by the tree alone: it is prefix tuning's, which reads a bare checkpoint."""
    del params
    return False
