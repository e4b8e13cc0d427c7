"""P-tuning (Liu et al. 2021, "GPT Understands, Too"): a prompt computed by an encoder.

The input-embedding seam, as prompt tuning: `T5(config, encoder_prompt=PromptEncoder(...))`.
Trainable `virtual_tokens [p, embed]` go through the prompt encoder to the `[p, embed]`
prompt, the frozen model unchanged. As PEFT's `PromptEncoder`:

- `encoder='lstm'` (the paper's): a 2-layer bidirectional LSTM of `hidden_size` units
  each way, then a 2-layer MLP `2 * hidden_size -> 2 * hidden_size` (ReLU) `-> embed`;
- `encoder='mlp'`: `embed -> hidden_size` (ReLU) `-> hidden_size` (ReLU) `-> embed`.

`hidden_size` is PEFT's `encoder_hidden_size` (None: the model's width). LSTM gates are
PyTorch's order (input, forget, cell, output); its kernels are `[in, 4 * hidden]`, one
bias (PyTorch's two summed).

Placement: `prefix`, `after_bos` or `suffix` as prompt tuning's, or a template that
interleaves prompt slots with the task's fields and anchor words, e.g.
`'[P:3] {sentence} [P:3] It was'`. The template is data: `Method.task` registers the task's
templated copy (`data.templates`), whose inputs carry one reserved slot id per prompt
row; the seam writes prompt row k over the k-th slot (`combine.into_slots`). The model
learns no method, the inputs keep their length and mask, and eval, infer and a
checkpoint's export all see the same slots.

The export is the computed prompt alone, `prompt [p, embed]` as `.npy`; with a
placement other than a template, plain prompt tuning reads it (same length and
placement). The checkpoint holds the encoder (`encoder_prompt/virtual_tokens`, `lstm`,
`mlp`), so a run resumes bit for bit.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning.methods.base import Arrays, Method, Params, check_array
from prompt_tuning.methods.prompt_tuning import ARRAY, MODULE, init_prompt_params
from prompt_tuning.models import layers
from prompt_tuning.models.config import T5Config
from prompt_tuning.models.network import T5
from prompt_tuning.prompts import combine, initializers
from prompt_tuning.prompts.prompt import PROMPT_AXES, Prompt, check_prompt_budget

TOKENS = "virtual_tokens"
ENCODERS = ("lstm", "mlp")
LSTM_LAYERS = 2
HIDDEN_AXES = ("prompt_embed", "prompt_hidden")


def lstm(params: Params, x: jax.Array, reverse: bool = False) -> jax.Array:
  """One LSTM direction over `x [p, in]` from zero state: `[p, hidden]`."""
  hidden = params["hidden_kernel"].shape[0]
  inputs = x @ params["input_kernel"] + params["bias"]

  def step(carry, gates):
    h, c = carry
    i, f, g, o = jnp.split(gates + h @ params["hidden_kernel"], 4)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h

  zeros = jnp.zeros((hidden,), x.dtype)
  return jax.lax.scan(step, (zeros, zeros), inputs, reverse=reverse)[1]


def bidirectional_lstm(params: Params, x: jax.Array) -> jax.Array:
  """Stacked bidirectional LSTM layers `layers_<i>/{forward,backward}`: `[p, 2 * hidden]`."""
  for i in range(len(params)):
    layer = params[f"layers_{i}"]
    x = jnp.concatenate([lstm(layer["forward"], x), lstm(layer["backward"], x, True)], -1)
  return x


def mlp(params: Params, x: jax.Array) -> jax.Array:
  """Dense layers `layers_<i>/{kernel,bias}`, ReLU between them."""
  for i in range(len(params)):
    if i:
      x = jax.nn.relu(x)
    x = x @ params[f"layers_{i}"]["kernel"] + params[f"layers_{i}"]["bias"]
  return x


def encode_prompt(tree: Params, encoder: str) -> jax.Array:
  """The `[p, embed]` prompt from a P-tuning tree (`virtual_tokens`, `lstm`?, `mlp`)."""
  x = jnp.asarray(tree[TOKENS])
  if encoder == "lstm":
    x = bidirectional_lstm(tree["lstm"], x)
  return mlp(tree["mlp"], x)


def _uniform(rng, shape, fan_in: int, axes) -> nn.Partitioned:
  """PyTorch's default for LSTM and Linear weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / np.sqrt(fan_in)
  return nn.Partitioned(jax.random.uniform(rng, shape, jnp.float32, -bound, bound), axes)


def mlp_widths(encoder: str, width: int, hidden: int) -> list[int]:
  return [2 * hidden, 2 * hidden, width] if encoder == "lstm" else [width, hidden, hidden, width]


class PromptEncoder(nn.Module):
  """The seam module: `virtual_tokens` through the encoder, placed (see the module doc)."""
  length: int
  encoder: str = "lstm"
  hidden_size: Optional[int] = None
  initializer: initializers.PromptInit = initializers.from_uniform()
  placement: str = "prefix"
  slot_id: Optional[int] = None

  @nn.compact
  def __call__(self, embedded, mask, tokens=None, task_ids=None, embedding=None):
    del task_ids
    width = embedded.shape[-1]
    hidden = self.hidden_size or width
    init = lambda rng, shape, table: self.initializer(rng, shape, table)
    tree = {TOKENS: self.param(TOKENS, layers.with_axes(init, PROMPT_AXES),
                               (self.length, width), embedding)}
    if self.encoder == "lstm":
      tree["lstm"] = self.param("lstm", self._init_lstm, width, hidden)
    tree["mlp"] = self.param("mlp", self._init_mlp, mlp_widths(self.encoder, width, hidden))
    prompt = encode_prompt(nn.meta.unbox(tree), self.encoder)
    prompt = layers.constrain(prompt.astype(embedded.dtype), PROMPT_AXES)
    return combine.place(prompt, embedded, mask, tokens, self.placement, self.slot_id)

  def _init_lstm(self, rng, width: int, hidden: int) -> Params:
    keys = iter(jax.random.split(rng, 6 * LSTM_LAYERS))
    out = {}
    for i in range(LSTM_LAYERS):
      fan = width if i == 0 else 2 * hidden
      out[f"layers_{i}"] = {direction: {
          "input_kernel": _uniform(next(keys), (fan, 4 * hidden), hidden, HIDDEN_AXES),
          "hidden_kernel": _uniform(next(keys), (hidden, 4 * hidden), hidden, HIDDEN_AXES),
          "bias": _uniform(next(keys), (4 * hidden,), hidden, ("prompt_hidden",))}
                            for direction in ("forward", "backward")}
    return out

  def _init_mlp(self, rng, widths: list[int]) -> Params:
    keys = iter(jax.random.split(rng, 2 * len(widths)))
    return {f"layers_{i}": {
        "kernel": _uniform(next(keys), (a, b), a, HIDDEN_AXES),
        "bias": _uniform(next(keys), (b,), a, ("prompt_hidden",))}
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PTuning(Method):
  """P-tuning; see the module docstring.

  `template` (e.g. `'[P:3] {sentence} [P:3] It was'`) sets the placement to `'template'`;
  its slots must number `length`. `slot_id` is the token id of a slot, by default the
  lowest sentinel of `vocabulary` (the package's by default). `initializer` starts the
  virtual tokens (a prompt initialiser; uniform by default).
  """
  length: int = 20
  encoder: str = "lstm"
  hidden_size: Optional[int] = None
  placement: str = "prefix"
  template: Optional[str] = None
  slot_id: Optional[int] = None
  initializer: Optional[initializers.PromptInit] = None
  vocabulary: Any = None

  name: ClassVar[str] = "p_tuning"
  trainable: ClassVar[tuple[str, ...]] = (f"{MODULE}/.*",)
  export_needs_config: ClassVar[bool] = False

  def __post_init__(self):
    if not isinstance(self.length, int) or self.length < 1:
      raise ValueError(f"P_TUNING_LENGTH must be a positive integer, got {self.length!r}")
    if self.encoder not in ENCODERS:
      raise ValueError(f"PROMPT_ENCODER {self.encoder!r}: choose one of {list(ENCODERS)}")
    if self.hidden_size is not None and self.hidden_size < 1:
      raise ValueError(f"ENCODER_HIDDEN_SIZE must be positive (or None), got {self.hidden_size}")
    combine.check_placement(self.placement)
    if self.template is None:
      if self.placement == combine.TEMPLATE:
        raise ValueError("placement 'template' needs a template: set P_TUNING_TEMPLATE")
      return
    if self.placement not in ("prefix", combine.TEMPLATE):  # prefix: the gin default
      raise ValueError(f"P_TUNING_PLACEMENT {self.placement!r} and a template: the template "
                       "places the prompt; unset one of them")
    from prompt_tuning.data import templates  # pylint: disable=import-outside-toplevel
    slots = templates.slot_count(self.template)
    if slots != self.length:
      raise ValueError(f"P_TUNING_TEMPLATE {self.template!r} has {slots} prompt slots but "
                       f"P_TUNING_LENGTH is {self.length}: make them equal")
    object.__setattr__(self, "placement", combine.TEMPLATE)
    if self.slot_id is None:
      vocab = self.vocabulary
      if vocab is None:
        from prompt_tuning.data.vocab import get_vocabulary  # pylint: disable=import-outside-toplevel
        vocab = get_vocabulary()
      object.__setattr__(self, "slot_id", templates.slot_id(vocab))

  def build_model(self, config: T5Config) -> T5:
    return T5(config, encoder_prompt=PromptEncoder(
        self.length, self.encoder, self.hidden_size,
        self.initializer or initializers.from_uniform(), self.placement, self.slot_id,
        name=MODULE))

  def init_params(self, model: T5, frozen_params: Params, rng: Any) -> Params:
    return init_prompt_params(model, frozen_params, rng)

  def check_lengths(self, input_length: int, max_encoder_length: Optional[int]) -> None:
    if self.template is None:
      check_prompt_budget(self.length, input_length, max_encoder_length)

  def task(self, name: str) -> str:
    if self.template is None:
      return name
    from prompt_tuning.data import templates  # pylint: disable=import-outside-toplevel
    return templates.templated_task(name, self.template, self.slot_id)

  def encode_inputs(self, vocabulary: Any, text: str) -> list[int]:
    if self.template is None:
      return super().encode_inputs(vocabulary, text)
    from prompt_tuning.data import templates  # pylint: disable=import-outside-toplevel
    return templates.encode(vocabulary, text, self.slot_id)

  def export_readers(self) -> tuple[str, ...]:
    return () if self.template is not None else ("prompt_tuning",)

  def export(self, params: Params, config: T5Config) -> Arrays:
    del config
    return {ARRAY: np.asarray(encode_prompt(params[MODULE], self.encoder), np.float32)}

  def load(self, arrays: Arrays, config: T5Config, where: str) -> tuple[T5, Params]:
    name = ARRAY if ARRAY in arrays or len(arrays) != 1 else next(iter(arrays))
    prompt = check_array(arrays, name, (self.length, config.emb_dim), f"prompt file {where}")
    fixed = Prompt(self.length, placement=self.placement, slot_id=self.slot_id, name=MODULE)
    return T5(config, encoder_prompt=fixed), {MODULE: {ARRAY: prompt}}

  @classmethod
  def from_params(cls, params: Params) -> "PTuning":
    tree = params[MODULE]
    return cls(length=int(np.shape(tree[TOKENS])[0]),
               encoder="lstm" if "lstm" in tree else "mlp")

  @classmethod
  def owns(cls, params: Params) -> bool:
    return isinstance(params.get(MODULE), dict) and TOKENS in params[MODULE]
