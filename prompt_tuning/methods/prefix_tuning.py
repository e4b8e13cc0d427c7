"""Prefix tuning (Li & Liang 2021): trainable keys and values in front of every attention.

The key/value prefix seam: `T5(config, kv_prefixes=Prefixes(...))`. For each attention
kind in `attention` (`encoder` self, `decoder` self, `cross`), every layer gets `length`
keys and values `[length, heads, head_dim]`. They train

- reparameterised (the paper's way, `reparameterize=True`): per kind a `[length, embed]`
  embedding through a two-layer MLP (`embed -> hidden_dim`, tanh, `-> layers * 2 *
  heads * head_dim`) to every layer's keys and values; or
- directly (`reparameterize=False`): the keys and values are the parameters.

The export drops the MLP: one `.npz` of the computed keys and values, named
`encoder/layers_0/key`, `encoder/layers_0/value`, ..., each `[length, heads, head_dim]`,
which eval and infer read back as fixed prefixes. Parameters live under `kv_prefixes/`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning.io.errors import CheckpointError
from prompt_tuning.methods.base import Arrays, Method, Params, check_array
from prompt_tuning.models.config import T5Config
from prompt_tuning.models.network import KV_PREFIX_KINDS, T5

MODULE = "kv_prefixes"
KV_AXES = ("prefix", "heads", "kv")
INITS = ("random", "real_words")


def _num_layers(config_or_counts, kind: str) -> int:
  encoder, decoder = config_or_counts
  return encoder if kind == "encoder" else decoder


def mlp_prefixes(tree: Params, num_layers: int, heads: int, head_dim: int) -> list:
  """One kind's `[(key, value)]` per layer, each `[p, heads, head_dim]`, from its MLP."""
  hidden = jnp.tanh(tree["embedding"] @ tree["hidden"]["kernel"] + tree["hidden"]["bias"])
  out = hidden @ tree["out"]["kernel"] + tree["out"]["bias"]
  out = out.reshape(out.shape[0], num_layers, 2, heads, head_dim)
  return [(out[:, i, 0], out[:, i, 1]) for i in range(num_layers)]


class Prefixes(nn.Module):
  """The `kv_prefixes` module: `(kind, task_ids) -> [(key, value)] per layer or None`,
  each `[1, length, heads, head_dim]` (one prefix for the whole batch)."""
  length: int
  attention: tuple[str, ...]
  layers: tuple[int, int]  # (encoder, decoder) layer counts
  heads: int
  head_dim: int
  emb_dim: int
  reparameterize: bool = True
  hidden_dim: int = 512

  @nn.compact
  def __call__(self, kind: str, task_ids: Optional[jax.Array] = None):
    del task_ids
    if kind not in self.attention:
      return None
    n = _num_layers(self.layers, kind)
    tree = self.param(kind, self._init, n)
    if self.reparameterize:
      pairs = mlp_prefixes(tree, n, self.heads, self.head_dim)
    else:
      pairs = [(tree[f"layers_{i}"]["key"], tree[f"layers_{i}"]["value"]) for i in range(n)]
    return [(k[None], v[None]) for k, v in pairs]

  def _init(self, rng: jax.Array, num_layers: int) -> Params:
    """Random parameters of one kind, each leaf boxed with its logical axes."""
    keys = iter(jax.random.split(rng, 2 * num_layers + 3))
    boxed = lambda value, axes: nn.Partitioned(value, axes)
    kv = (self.length, self.heads, self.head_dim)
    if not self.reparameterize:
      normal = lambda: jax.random.normal(next(keys), kv, jnp.float32)
      return {f"layers_{i}": {"key": boxed(normal(), KV_AXES), "value": boxed(normal(), KV_AXES)}
              for i in range(num_layers)}
    width = num_layers * 2 * self.heads * self.head_dim
    fan_in = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    return {
        "embedding": boxed(jax.random.normal(next(keys), (self.length, self.emb_dim)),
                           ("prefix", "prompt_embed")),
        "hidden": {"kernel": boxed(fan_in(next(keys), (self.emb_dim, self.hidden_dim)),
                                   ("prompt_embed", "prefix_hidden")),
                   "bias": boxed(jnp.zeros((self.hidden_dim,)), ("prefix_hidden",))},
        "out": {"kernel": boxed(fan_in(next(keys), (self.hidden_dim, width)),
                                ("prefix_hidden", "prefix_layers")),
                "bias": boxed(jnp.zeros((width,)), ("prefix_layers",))},
    }


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PrefixTuning(Method):
  """Prefix tuning; see the module docstring.

  `init='random'` starts from random parameters; `init='real_words'` (direct training
  only) starts every layer's keys and values from those the frozen model computes for
  `init_text`'s tokens (the paper's "initialise with real words"), the tokens repeated
  to fill `length` positions. `vocabulary` tokenises `init_text` (the package's by
  default).
  """
  length: int = 10
  attention: Sequence[str] = KV_PREFIX_KINDS
  reparameterize: bool = True
  hidden_dim: int = 512
  init: str = "random"
  init_text: Optional[str] = None
  vocabulary: Any = None

  name: ClassVar[str] = "prefix_tuning"
  trainable: ClassVar[tuple[str, ...]] = (f"{MODULE}/.*",)
  macro: ClassVar[str] = "PREFIX"  # its gin file's macros, named in errors

  def __post_init__(self):
    object.__setattr__(self, "attention", tuple(self.attention))
    m = self.macro
    if not isinstance(self.length, int) or self.length < 1:
      raise ValueError(f"{m}_LENGTH must be a positive integer, got {self.length!r}")
    unknown = [k for k in self.attention if k not in KV_PREFIX_KINDS]
    if not self.attention or unknown or len(set(self.attention)) != len(self.attention):
      raise ValueError(f"{m}_ATTENTION={list(self.attention)}: choose one or more of "
                       f"{list(KV_PREFIX_KINDS)}, each once")
    if self.hidden_dim < 1:
      raise ValueError(f"{m}_HIDDEN_DIM must be positive, got {self.hidden_dim}")
    if self.init not in INITS:
      raise ValueError(f"prefix init {self.init!r}: choose one of {INITS}")
    if self.init == "real_words":
      if not self.init_text:
        raise ValueError("init='real_words' needs init_text: the words whose keys and "
                         "values start the prefix")
      if self.reparameterize:
        raise ValueError("init='real_words' sets the keys and values themselves; the MLP "
                         "cannot start at them: set reparameterize=False "
                         f"({m}_REPARAMETERIZE = False)")

  def _module(self, config: T5Config, reparameterize: bool, length: int,
              attention: tuple[str, ...]) -> Prefixes:
    return Prefixes(length, attention, (config.num_encoder_layers, config.num_decoder_layers),
                    config.num_heads, config.head_dim, config.emb_dim, reparameterize,
                    self.hidden_dim)

  def build_model(self, config: T5Config) -> T5:
    return T5(config, kv_prefixes=self._module(config, self.reparameterize, self.length,
                                               self.attention))

  def init_params(self, model: T5, frozen_params: Params, rng: Any) -> Params:
    _, variables = model.apply({"params": frozen_params}, method=T5.all_prefixes,
                               rngs={"params": rng}, mutable=["params"])
    tree = variables["params"][MODULE]
    if self.init == "real_words":
      tree = _set_values(tree, real_word_prefixes(model.config, frozen_params,
                                                  self._tokens(), self.length))
    return {MODULE: tree}

  def _tokens(self) -> list[int]:
    vocab = self.vocabulary
    if vocab is None:
      from prompt_tuning.data.vocab import get_vocabulary  # pylint: disable=import-outside-toplevel
      vocab = get_vocabulary()
    ids = [int(i) for i in vocab.encode(self.init_text)]
    if not ids:
      raise ValueError(f"init_text {self.init_text!r} tokenizes to nothing")
    return ids

  def export(self, params: Params, config: T5Config) -> Arrays:
    tree = params[MODULE]
    arrays = {}
    for kind in self.attention:
      n = _num_layers((config.num_encoder_layers, config.num_decoder_layers), kind)
      if self.reparameterize:
        pairs = mlp_prefixes(jax.tree.map(jnp.asarray, tree[kind]), n, config.num_heads,
                             config.head_dim)
      else:
        pairs = [(tree[kind][f"layers_{i}"]["key"], tree[kind][f"layers_{i}"]["value"])
                 for i in range(n)]
      for i, (key, value) in enumerate(pairs):
        arrays[f"{kind}/layers_{i}/key"] = np.asarray(key, np.float32)
        arrays[f"{kind}/layers_{i}/value"] = np.asarray(value, np.float32)
    return arrays

  def load(self, arrays: Arrays, config: T5Config, where: str) -> tuple[T5, Params]:
    kinds = tuple(k for k in KV_PREFIX_KINDS if any(n.startswith(f"{k}/") for n in arrays))
    stray = sorted(n for n in arrays if n.split("/")[0] not in KV_PREFIX_KINDS)
    if not kinds or stray:
      raise CheckpointError(f"{where} is not a prefix-tuning export: its arrays "
                            f"{sorted(arrays)[:6]} are not named <kind>/layers_<i>/key|value "
                            f"for kinds {list(KV_PREFIX_KINDS)}")
    first = np.asarray(arrays[sorted(arrays)[0]])
    length = first.shape[0] if first.ndim else 0
    tree, expected = {}, set()
    for kind in kinds:
      n = _num_layers((config.num_encoder_layers, config.num_decoder_layers), kind)
      tree[kind] = {}
      for i in range(n):
        layer = {}
        for part in ("key", "value"):
          name = f"{kind}/layers_{i}/{part}"
          expected.add(name)
          layer[part] = check_array(arrays, name, (length, config.num_heads, config.head_dim),
                                    where)
        tree[kind][f"layers_{i}"] = layer
    extra = sorted(set(arrays) - expected)
    if extra:
      raise CheckpointError(f"{where} holds prefixes for layers this model lacks "
                            f"({extra[:4]}): it was exported from a deeper model")
    model = T5(config, kv_prefixes=self._module(config, False, length, kinds))
    return model, {MODULE: tree}

  @classmethod
  def owns(cls, params: Params) -> bool:
    return isinstance(params.get(MODULE), dict)


def real_word_prefixes(config: T5Config, frozen_params: Params, tokens: Sequence[int],
                       length: int) -> dict[str, list]:
  """`{kind: [(key, value)] per layer}`, each `[length, heads, head_dim]`: the keys and
  values the frozen model computes for `tokens` (repeated to `length`) as encoder input
  (encoder self-attention, and cross-attention over its output) and decoder input."""
  ids = jnp.asarray((list(tokens) * length)[:length], jnp.int32)[None]
  is_kv = lambda module, method: module.name in ("key", "value") and method == "__call__"
  _, state = T5(config.replace(dropout_rate=0.0)).apply(
      {"params": frozen_params}, ids, ids, capture_intermediates=is_kv,
      mutable=["intermediates"])
  found = state["intermediates"]
  split = lambda x: np.asarray(x["__call__"][0][0], np.float32).reshape(
      length, config.num_heads, config.head_dim)
  stacks = {"encoder": ("encoder", "attention", config.num_encoder_layers),
            "decoder": ("decoder", "self_attention", config.num_decoder_layers),
            "cross": ("decoder", "encoder_decoder_attention", config.num_decoder_layers)}
  out = {}
  for kind, (stack, attention, n) in stacks.items():
    layers = [found[stack][f"layers_{i}"][attention] for i in range(n)]
    out[kind] = [(split(a["key"]), split(a["value"])) for a in layers]
  return out


def _set_values(tree: Params, prefixes: dict[str, list]) -> Params:
  """The direct parameters of `tree` (boxed) with their values replaced by `prefixes`."""
  out = {}
  for kind, layers in tree.items():
    out[kind] = {}
    for name, parts in layers.items():
      i = int(name.split("_")[1])
      out[kind][name] = {part: box.replace_boxed(jnp.asarray(prefixes[kind][i][j]))
                         for j, (part, box) in enumerate(sorted(parts.items()))}
  return out
