"""Prompt tuning (Lester et al. 2021): a trainable `[p, d]` prompt on the encoder's inputs.

The input-embedding seam: `T5(config, encoder_prompt=Prompt(...))`. Its one parameter
is `encoder_prompt/prompt`; the export is that array alone, as `.npy`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning.methods.base import Arrays, Method, Params, check_array
from prompt_tuning.models.config import T5Config
from prompt_tuning.models.network import T5
from prompt_tuning.prompts import initializers
from prompt_tuning.prompts.prompt import Prompt, check_prompt_budget

MODULE = "encoder_prompt"
ARRAY = "prompt"


def prompted_t5(config: T5Config, length: int = 100,
                initializer: Optional[initializers.PromptInit] = None,
                placement: str = "prefix") -> T5:
  """A frozen T5 with a trainable prompt on the encoder's inputs (Lester et al. 2021)."""
  prompt = Prompt(length, initializer or initializers.from_uniform(), placement, name=MODULE)
  return T5(config, encoder_prompt=prompt)


def init_prompt_params(model: T5, frozen_params, rng: jax.Array) -> dict:
  """Creates the prompt's parameters against the frozen model's embedding.

  Runs only the embedding and the prompt (not the encoder), so it is cheap for any
  model size. Returns `{"encoder_prompt": {...}}` with logical-axis boxes.
  """
  if model.encoder_prompt is None:
    raise ValueError("this T5 has no encoder_prompt: build it with prompted_t5(...)")
  tokens = jnp.ones((1, 1), jnp.int32)
  _, variables = model.apply({"params": frozen_params}, tokens, method=T5.prompted_inputs,
                             rngs={"params": rng}, mutable=["params"])
  return {MODULE: variables["params"][MODULE]}


@dataclasses.dataclass(frozen=True)
class PromptTuning(Method):
  """`length` prompt rows, started by `initializer`, placed by `placement`."""
  length: int = 100
  initializer: Optional[initializers.PromptInit] = None
  placement: str = "prefix"

  name: ClassVar[str] = "prompt_tuning"
  trainable: ClassVar[tuple[str, ...]] = (f"{MODULE}/.*",)
  export_needs_config: ClassVar[bool] = False

  def build_model(self, config: T5Config) -> T5:
    return prompted_t5(config, self.length, self.initializer, self.placement)

  def init_params(self, model: T5, frozen_params: Params, rng: Any) -> Params:
    return init_prompt_params(model, frozen_params, rng)

  def check_lengths(self, input_length: int, max_encoder_length: Optional[int]) -> None:
    check_prompt_budget(self.length, input_length, max_encoder_length)

  def export(self, params: Params, config: T5Config) -> Arrays:
    del config
    return {ARRAY: np.asarray(params[MODULE][ARRAY])}

  def load(self, arrays: Arrays, config: T5Config, where: str) -> tuple[T5, Params]:
    name = ARRAY if ARRAY in arrays or len(arrays) != 1 else next(iter(arrays))
    prompt = check_array(arrays, name, (self.length, config.emb_dim), f"prompt file {where}")
    return self.build_model(config), {MODULE: {ARRAY: prompt}}

  @classmethod
  def from_params(cls, params: Params) -> "PromptTuning":
    return cls(length=int(np.shape(params[MODULE][ARRAY])[0]))

  @classmethod
  def owns(cls, params: Params) -> bool:
    return isinstance(params.get(MODULE), dict) and ARRAY in params[MODULE]
