"""The T5X parameter tree a `T5Config` implies, and checks of a loaded tree against it."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from prompt_tuning.io.errors import CheckpointError
from prompt_tuning.models.config import T5Config

_MAX_LISTED = 20


def mlp_kernel_names(config: T5Config) -> list[str]:
  """`['wi']` for a single activation (T5 1.0), `['wi_0', 'wi_1', ...]` for a gated MLP."""
  if len(config.mlp_activations) == 1:
    return ["wi"]
  return [f"wi_{i}" for i in range(len(config.mlp_activations))]


def expected_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
  """Maps each parameter path (`encoder/layers_0/attention/query/kernel`) to its shape."""
  emb, joined = config.emb_dim, config.num_heads * config.head_dim
  rel = (config.num_heads, config.relative_attention_num_buckets)
  shapes = {"token_embedder/embedding": (config.vocab_size, emb)}

  def attention(prefix):
    for name in ("query", "key", "value"):
      shapes[f"{prefix}/{name}/kernel"] = (emb, joined)
    shapes[f"{prefix}/out/kernel"] = (joined, emb)

  def mlp(prefix):
    for name in mlp_kernel_names(config):
      shapes[f"{prefix}/{name}/kernel"] = (emb, config.mlp_dim)
    shapes[f"{prefix}/wo/kernel"] = (config.mlp_dim, emb)

  shapes["encoder/relpos_bias/rel_embedding"] = rel
  for i in range(config.num_encoder_layers):
    layer = f"encoder/layers_{i}"
    shapes[f"{layer}/pre_attention_layer_norm/scale"] = (emb,)
    attention(f"{layer}/attention")
    shapes[f"{layer}/pre_mlp_layer_norm/scale"] = (emb,)
    mlp(f"{layer}/mlp")
  shapes["encoder/encoder_norm/scale"] = (emb,)

  shapes["decoder/relpos_bias/rel_embedding"] = rel
  for i in range(config.num_decoder_layers):
    layer = f"decoder/layers_{i}"
    shapes[f"{layer}/pre_self_attention_layer_norm/scale"] = (emb,)
    attention(f"{layer}/self_attention")
    shapes[f"{layer}/pre_cross_attention_layer_norm/scale"] = (emb,)
    attention(f"{layer}/encoder_decoder_attention")
    shapes[f"{layer}/pre_mlp_layer_norm/scale"] = (emb,)
    mlp(f"{layer}/mlp")
  shapes["decoder/decoder_norm/scale"] = (emb,)
  if not config.logits_via_embedding:
    shapes["decoder/logits_dense/kernel"] = (emb, config.vocab_size)
  return shapes


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """`{'a': {'b': x}}` -> `{'a/b': x}`; leaves are anything that is not a mapping.

  Leaves boxed with logical axes (flax's `nn.Partitioned`, as `init` returns them) are
  unboxed to their arrays.
  """
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + "/"))
    else:
      flat[path] = value.unbox() if callable(getattr(value, "unbox", None)) else value
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """`{'a/b': x}` -> `{'a': {'b': x}}`, the inverse of `flatten`."""
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def listing(items, limit: int = _MAX_LISTED) -> str:
  """One item per line, cut after `limit` with a count of the rest."""
  items = list(items)
  lines = [f"  {item}" for item in items[:limit]]
  if len(items) > limit:
    lines.append(f"  ... and {len(items) - limit} more")
  return "\n".join(lines)


def validate_params(config: T5Config, params: Mapping[str, Any]) -> None:
  """Raises `CheckpointError` unless `params` holds exactly the tensors `config` implies.

  Every problem is reported at once: the missing tensors, the unexpected ones, and each
  tensor whose shape differs from the one the config implies (both shapes named).
  """
  if not isinstance(params, Mapping):
    raise CheckpointError(f"params must be a nested dict of arrays, got {type(params).__name__}")
  if set(params) == {"params"}:
    raise CheckpointError("params has a single top-level key 'params': pass "
                          "variables['params'], not the whole variables dict")
  expected = expected_shapes(config)
  flat = flatten(params)
  missing = [path for path in expected if path not in flat]
  unexpected = sorted(path for path in flat if path not in expected)
  wrong = [f"{path}: shape {tuple(np.shape(flat[path]))}, config implies {shape}"
           for path, shape in expected.items()
           if path in flat and tuple(np.shape(flat[path])) != shape]
  problems = []
  if missing:
    problems.append(f"{len(missing)} missing tensor(s):\n{listing(missing)}")
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected tensor(s):\n{listing(unexpected)}")
  if wrong:
    problems.append(f"{len(wrong)} tensor(s) with the wrong shape:\n{listing(wrong)}")
  if problems:
    raise CheckpointError("parameters do not fit the T5Config "
                          f"(emb_dim={config.emb_dim}, num_heads={config.num_heads}, "
                          f"head_dim={config.head_dim}, mlp_dim={config.mlp_dim}, "
                          f"layers={config.num_encoder_layers}+{config.num_decoder_layers}, "
                          f"mlp_activations={config.mlp_activations}, "
                          f"logits_via_embedding={config.logits_via_embedding}):\n"
                          + "\n".join(problems))
