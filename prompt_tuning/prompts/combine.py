"""Where a prompt goes among the input embeddings, and how the encoder mask grows with it.

Each function maps a prompt `[p, embed]` (one for the batch) or `[batch, p, embed]`
(one per example, e.g. picked by task id), embedded inputs `[batch, length, embed]` and
their mask `[batch, length]` to `[batch, length + p, embed]` and `[batch, length + p]`.
Prompt positions are always real (mask True), so every input position and the
decoder's cross-attention see them. `into_slots` instead writes the prompt over a
template's slot positions, the length unchanged.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

Array = jax.Array
CombineFn = Callable[[Array, Array, Array], tuple[Array, Array]]


def _batched(prompt: Array, embedded: Array) -> Array:
  batch, width = embedded.shape[0], embedded.shape[-1]
  fits = prompt.shape[-1] == width and (prompt.ndim == 2 or
                                        (prompt.ndim == 3 and prompt.shape[0] == batch))
  if not fits:
    raise ValueError(f"prompt of shape {tuple(prompt.shape)} does not fit inputs of shape "
                     f"{tuple(embedded.shape)}: need [p, {width}] or [{batch}, p, {width}]")
  if prompt.ndim == 2:
    prompt = jnp.broadcast_to(prompt[None], (batch,) + prompt.shape)
  return prompt.astype(embedded.dtype)


def prefix(prompt: Array, embedded: Array, mask: Array) -> tuple[Array, Array]:
  """`[prompt; inputs]`: the paper's default."""
  prompt = _batched(prompt, embedded)
  ones = jnp.ones(prompt.shape[:2], bool)
  return jnp.concatenate([prompt, embedded], axis=1), jnp.concatenate([ones, mask], axis=1)


def after_bos(prompt: Array, embedded: Array, mask: Array) -> tuple[Array, Array]:
  """`[first input token; prompt; rest]`, for vocabularies that begin inputs with a BOS."""
  prompt = _batched(prompt, embedded)
  ones = jnp.ones(prompt.shape[:2], bool)
  x = jnp.concatenate([embedded[:, :1], prompt, embedded[:, 1:]], axis=1)
  return x, jnp.concatenate([mask[:, :1], ones, mask[:, 1:]], axis=1)


def suffix(prompt: Array, embedded: Array, mask: Array) -> tuple[Array, Array]:
  """`[inputs; prompt; padding]`: the prompt right after each example's real tokens.

  Inputs are right-padded, so an example's length is the count of its real positions.
  """
  prompt = _batched(prompt, embedded)
  batch, length, _ = embedded.shape
  p = prompt.shape[1]
  lengths = jnp.sum(mask, axis=1, dtype=jnp.int32)[:, None]  # [batch, 1]
  j = jnp.arange(length + p)[None, :]  # output positions
  in_prompt = (j >= lengths) & (j < lengths + p)
  source = jnp.where(j < lengths, j, jnp.clip(j - p, 0, length - 1))
  from_inputs = jnp.take_along_axis(embedded, source[..., None], axis=1)
  from_prompt = jnp.take_along_axis(prompt, jnp.clip(j - lengths, 0, p - 1)[..., None], axis=1)
  x = jnp.where(in_prompt[..., None], from_prompt, from_inputs)
  return x, jnp.broadcast_to(j < lengths + p, (batch, length + p))


def into_slots(prompt: Array, embedded: Array, mask: Array, slots: Array
               ) -> tuple[Array, Array]:
  """The inputs with the k-th slot position of each row (`slots [batch, length]` True)
  holding prompt row k: a template's placement (see `data.templates`).

  Length and mask stay; slots past the prompt's rows (none, when the template made them)
  take its last row.
  """
  prompt = _batched(prompt, embedded)
  row = jnp.clip(jnp.cumsum(slots, axis=1, dtype=jnp.int32) - 1, 0, prompt.shape[1] - 1)
  from_prompt = jnp.take_along_axis(prompt, row[..., None], axis=1)
  return jnp.where(slots[..., None], from_prompt, embedded), mask


def place(prompt: Array, embedded: Array, mask: Array, tokens: Optional[Array],
          placement: str, slot_id: Optional[int] = None) -> tuple[Array, Array]:
  """`prompt` placed among the inputs by `placement`: a `COMBINE_FNS` name, or
  `TEMPLATE` (the positions where `tokens == slot_id`)."""
  if placement == TEMPLATE:
    if tokens is None or slot_id is None:
      raise ValueError("the template placement needs the input tokens and the slot id")
    return into_slots(prompt, embedded, mask, tokens == slot_id)
  return get_combine_fn(placement)(prompt, embedded, mask)


TEMPLATE = "template"
COMBINE_FNS: dict[str, CombineFn] = {"prefix": prefix, "after_bos": after_bos, "suffix": suffix}


def check_placement(name: str) -> None:
  """Refuses a placement that is neither a `COMBINE_FNS` name nor `TEMPLATE`."""
  if name != TEMPLATE:
    get_combine_fn(name)


def get_combine_fn(name: str) -> CombineFn:
  if name not in COMBINE_FNS:
    raise ValueError(f"unknown prompt placement {name!r}; choose one of {sorted(COMBINE_FNS)}")
  return COMBINE_FNS[name]
