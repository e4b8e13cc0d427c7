"""Prompt initialisers: `init(rng, shape, embedding) -> [p, embed] float32 array`.

`embedding` is the frozen model's token embedding `[vocab, embed]`, which several
initialisers draw rows from. Each factory below is gin-configurable, e.g.
`prompt_init = @from_sampled_vocab()` with `from_sampled_vocab.population_size = 5000`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PromptInit = Callable[[Array, tuple, Optional[Array]], Array]


def _check_shape(shape: tuple) -> None:
  if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
    raise ValueError(f"a prompt is [length, embed] with both positive, got shape {tuple(shape)}")


def _need_embedding(embedding: Optional[Array], shape: tuple, who: str) -> Array:
  if embedding is None:
    raise ValueError(f"{who} draws from the frozen token embedding, but none was given")
  if embedding.ndim != 2 or embedding.shape[1] != shape[1]:
    raise ValueError(f"{who}: the prompt is {shape[1]} wide but the token embedding has shape "
                     f"{tuple(embedding.shape)}")
  return embedding


def _tokenize(vocabulary: Any, text: str) -> list[int]:
  ids = list(vocabulary.encode(text))
  if not ids:
    raise ValueError(f"{text!r} tokenizes to nothing; pick a non-empty text")
  return ids


@gin.configurable
def from_uniform(scale: float = 0.5) -> PromptInit:
  """Uniform in `[-scale, scale]`: the paper's random baseline."""
  def init(rng, shape, embedding=None):
    del embedding
    _check_shape(shape)
    return jax.random.uniform(rng, shape, jnp.float32, -scale, scale)
  return init


@gin.configurable
def from_sampled_vocab(population_size: int = 5000) -> PromptInit:
  """Rows of the frozen embedding drawn from the first `population_size` ids.

  Without replacement while the prompt is no longer than the population; with
  replacement beyond that.
  """
  if population_size < 1:
    raise ValueError(f"population_size must be positive, got {population_size}")

  def init(rng, shape, embedding=None):
    _check_shape(shape)
    table = _need_embedding(embedding, shape, "from_sampled_vocab")
    population = min(population_size, table.shape[0])
    ids = jax.random.choice(rng, population, (shape[0],), replace=shape[0] > population)
    return jnp.asarray(table, jnp.float32)[ids]
  return init


@gin.configurable
def from_class_labels(class_labels: Sequence[str] = gin.REQUIRED, vocabulary: Any = None,
                      fallback: Optional[PromptInit] = None) -> PromptInit:
  """One row per label: the mean embedding of the label's subword tokens.

  Labels fill the first rows; the rest come from `fallback` (sampled vocabulary by
  default). `vocabulary` tokenises the labels (a seqio vocabulary or anything with
  `encode(str) -> list[int]`); by default the package's vocabulary.
  """
  labels = list(class_labels)
  if not labels:
    raise ValueError("from_class_labels needs at least one class label")
  fallback = fallback or from_sampled_vocab()

  def init(rng, shape, embedding=None):
    _check_shape(shape)
    table = jnp.asarray(_need_embedding(embedding, shape, "from_class_labels"), jnp.float32)
    if len(labels) > shape[0]:
      raise ValueError(f"{len(labels)} class labels do not fit in a prompt of length "
                       f"{shape[0]}; use a longer prompt")
    vocab = vocabulary if vocabulary is not None else _default_vocabulary()
    rows = jnp.stack([table[jnp.asarray(_tokenize(vocab, label))].mean(axis=0)
                      for label in labels])
    rest = shape[0] - len(labels)
    if rest:
      rows = jnp.concatenate([rows, fallback(rng, (rest, shape[1]), embedding)])
    return rows
  return init


@gin.configurable
def from_string(text: str = gin.REQUIRED, vocabulary: Any = None,
                fallback: Optional[PromptInit] = None) -> PromptInit:
  """One row per token of `text` (e.g. a task instruction); the rest from `fallback`."""
  fallback = fallback or from_sampled_vocab()

  def init(rng, shape, embedding=None):
    _check_shape(shape)
    table = jnp.asarray(_need_embedding(embedding, shape, "from_string"), jnp.float32)
    vocab = vocabulary if vocabulary is not None else _default_vocabulary()
    ids = _tokenize(vocab, text)
    if len(ids) > shape[0]:
      raise ValueError(f"{text!r} is {len(ids)} tokens, longer than the prompt ({shape[0]})")
    rows = table[jnp.asarray(ids)]
    if len(ids) < shape[0]:
      rows = jnp.concatenate([rows, fallback(rng, (shape[0] - len(ids), shape[1]), embedding)])
    return rows
  return init


@gin.configurable
def from_array(array: Any = gin.REQUIRED) -> PromptInit:
  """A given `[p, embed]` array, e.g. a prompt learned on another task (SPoT)."""
  array = np.asarray(array, np.float32)

  def init(rng, shape, embedding=None):
    del rng, embedding
    _check_shape(shape)
    if tuple(array.shape) != tuple(shape):
      raise ValueError(f"the given prompt has shape {tuple(array.shape)} but the model expects "
                       f"{tuple(shape)} ([prompt length, embedding width])")
    return jnp.asarray(array)
  return init


@gin.configurable
def from_file(path: str = gin.REQUIRED) -> PromptInit:
  """A prompt saved as `.npy` (see `prompt_tuning.scripts.export_prompt`)."""
  def init(rng, shape, embedding=None):
    from prompt_tuning.io.prompts import load_prompt_npy
    return from_array(load_prompt_npy(path, expected_shape=tuple(shape)))(rng, shape, embedding)
  return init


@gin.configurable
def from_peft(path: str = gin.REQUIRED) -> PromptInit:
  """The prompt of a Hugging Face PEFT prompt-tuning adapter folder (`save_pretrained`).

  Either of PEFT's layouts: `num_transformer_submodules` 1, or 2 (PEFT's seq2seq
  default), whose first half is the encoder's prompt and whose decoder half PEFT never
  uses; that half is dropped. A PEFT prefix-tuning, P-tuning or LoRA adapter, a prompt of
  another width or of another length than PROMPT_LENGTH is an error.
  """
  def init(rng, shape, embedding=None):
    from prompt_tuning.io.peft import read_peft_prompt
    _check_shape(shape)
    prompt = read_peft_prompt(path, width=shape[1])
    if prompt.shape[0] != shape[0]:
      raise ValueError(f"the PEFT adapter {path} holds {prompt.shape[0]} virtual tokens but "
                       f"the prompt is {shape[0]} long: set PROMPT_LENGTH = {prompt.shape[0]}")
    return from_array(prompt)(rng, shape, embedding)
  return init


def _default_vocabulary():
  from prompt_tuning.data.vocab import get_vocabulary
  return get_vocabulary()


@gin.configurable
def prompt_file_length(path: str = gin.REQUIRED) -> int:
  """The length of the prompt saved in `path`, so `PROMPT_LENGTH` follows the file.

  For a method's `.npz` export (prefixes), the length of its first array.
  """
  from prompt_tuning.io.exports import load_export
  arrays, _ = load_export(path)
  prompt = arrays[sorted(arrays)[0]]
  if prompt.ndim != 2 and len(arrays) == 1:
    raise ValueError(f"prompt file {path} has shape {prompt.shape}; a prompt is [length, embed]")
  return int(prompt.shape[0])
