"""The trainable part: a `[p, embed]` prompt and the modules that place it.

A prompt module plugs into the model's input-embedding seam (see
`prompt_tuning.models.network`; `prompt_tuning.methods.prompt_tuning` builds it). Its contract is
`(embedded [batch, length, embed], mask [batch, length], tokens [batch, length],
task_ids [batch] | None, embedding [vocab, embed]) -> (embedded', mask')`, so the
related methods each come as one new module with that call, not as a fork of T5:
per-task prompts picked by `task_ids` (mixed-task batches), a prompt produced by a
small network (P-tuning), an attention mixture of several prompts (ATTEMPT).
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning.models import layers
from prompt_tuning.models.config import T5Config
from prompt_tuning.prompts import combine as combine_lib
from prompt_tuning.prompts import initializers

Array = jax.Array
PROMPT_AXES = ("prompt", "prompt_embed")


class Prompt(nn.Module):
  """A `[length, embed]` float32 parameter `prompt`, replicated over the mesh.

  `initializer(rng, shape, embedding)` sees the frozen token embedding, so prompts can
  start from vocabulary rows. The prompt is cast to the activations' dtype on use.
  `placement` is a `combine` placement; `'template'` puts the rows at the input tokens
  equal to `slot_id` (a template's slots, `data.templates`).
  """
  length: int
  initializer: initializers.PromptInit = initializers.from_uniform()
  placement: str = "prefix"
  slot_id: Optional[int] = None

  def __post_init__(self):
    if not isinstance(self.length, int) or self.length < 1:
      raise ValueError(f"prompt length must be a positive integer, got {self.length!r}")
    combine_lib.check_placement(self.placement)  # fail early on a bad name
    super().__post_init__()

  @nn.compact
  def __call__(self, embedded: Array, mask: Array, tokens: Optional[Array] = None,
               task_ids: Optional[Array] = None,
               embedding: Optional[Array] = None) -> tuple[Array, Array]:
    del task_ids
    width = embedded.shape[-1]
    if self.has_variable("params", "prompt"):  # check it ourselves, with a clearer message
      prompt = self.get_variable("params", "prompt")
    else:
      init = lambda rng, shape, table: self.initializer(rng, shape, table)
      prompt = self.param("prompt", layers.with_axes(init, PROMPT_AXES), (self.length, width),
                          embedding)
    prompt = nn.meta.unbox(prompt)
    if prompt.shape != (self.length, width):
      raise ValueError(f"the prompt has shape {tuple(prompt.shape)} but this model needs "
                       f"({self.length}, {width}): [prompt length, embedding width]")
    prompt = layers.constrain(prompt.astype(embedded.dtype), PROMPT_AXES)
    return combine_lib.place(prompt, embedded, mask, tokens, self.placement, self.slot_id)


def check_prompt_budget(prompt_length: int, input_length: int,
                        max_encoder_length: Optional[int] = None) -> int:
  """The encoder length `input_length + prompt_length`, checked against a budget.

  `max_encoder_length` is the longest encoder sequence the run allows (memory, or the
  length the model was trained at); `None` means no limit.
  """
  if prompt_length < 1:
    raise ValueError(f"PROMPT_LENGTH must be positive, got {prompt_length}")
  total = input_length + prompt_length
  if max_encoder_length is not None and total > max_encoder_length:
    raise ValueError(f"a prompt of {prompt_length} plus inputs of {input_length} is {total} "
                     f"encoder positions, over the budget of {max_encoder_length}; shorten "
                     "PROMPT_LENGTH or TASK_FEATURE_LENGTHS['inputs']")
  return total
