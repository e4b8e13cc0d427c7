"""The train state: trainable parameters and their optimiser state, apart from the frozen.

Frozen weights are an argument of the step, never part of the state: they get no
gradient, no optimiser state, and are never written to a prompt checkpoint.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

Params = dict[str, Any]

# Full fine-tuning and pretraining train every parameter; a tuning method names its own
# (`Method.trainable`). PROMPT_ONLY is prompt tuning's, kept for callers of this module.
EVERYTHING = (".*",)


def __getattr__(name):
  if name == "PROMPT_ONLY":
    from prompt_tuning.methods import PromptTuning  # pylint: disable=import-outside-toplevel
    return PromptTuning.trainable
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Params  # the trainable parameters only
  opt_state: optax.OptState

  @classmethod
  def create(cls, params: Params, tx: optax.GradientTransformation) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def split_params(params: Params, trainable: Sequence[str]) -> tuple[Params, Params]:
  """Splits a tree into (trainable, frozen) by full-match regexes over `a/b/c` paths."""
  patterns = [re.compile(p) for p in trainable]
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  is_trainable = lambda path: any(p.fullmatch(path) for p in patterns)
  train = {k: v for k, v in flat.items() if is_trainable(k)}
  if not train:
    raise ValueError(f"no parameter matches the trainable patterns {list(trainable)}; "
                     f"parameters start with {sorted({k.split('/')[0] for k in flat})}")
  frozen = {k: v for k, v in flat.items() if not is_trainable(k)}
  unflatten = lambda d: flax.traverse_util.unflatten_dict(d, sep="/") if d else {}
  return unflatten(train), unflatten(frozen)


def merge_params(*trees: Params) -> Params:
  """The union of disjoint parameter trees."""
  merged: dict[str, Any] = {}
  for tree in trees:
    for path, value in flax.traverse_util.flatten_dict(tree, sep="/").items():
      if path in merged:
        raise ValueError(f"parameter {path} is both trainable and frozen")
      merged[path] = value
  return flax.traverse_util.unflatten_dict(merged, sep="/") if merged else {}


def unbox(tree: Any) -> Any:
  return nn.meta.unbox(tree)


def tree_bytes(tree: Any) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))
