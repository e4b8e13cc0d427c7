"""Parameter-efficient tuning methods, one file each, behind one interface (`Method`).

    method = PrefixTuning(length=10)             # or PromptTuning, PTuning, DeepPrompts
    model = method.build_model(config)           # a frozen T5 with the method's seam
    params = method.init_params(model, frozen, rng)
    arrays = method.export(trained, config)      # what a user ships, by name

A new method is one new file here that touches no other package: add its class to
`METHODS`.
"""
from __future__ import annotations

from typing import Any, Optional

from prompt_tuning.methods.base import Method
from prompt_tuning.methods.deep_prompts import DeepPrompts
from prompt_tuning.methods.p_tuning import PTuning
from prompt_tuning.methods.prefix_tuning import PrefixTuning
from prompt_tuning.methods.prompt_tuning import PromptTuning

METHODS: dict[str, type[Method]] = {
    m.name: m for m in (PromptTuning, PrefixTuning, PTuning, DeepPrompts)}


def from_description(description: dict[str, Any]) -> Method:
  """The method `Method.describe()` wrote (config.json, sidecars)."""
  name = description.get("name")
  if name not in METHODS:
    raise ValueError(f"unknown tuning method {name!r}; known: {sorted(METHODS)}")
  return METHODS[name](**description.get("settings", {}))


def detect(params: dict[str, Any]) -> Optional[type[Method]]:
  """The method whose parameters a trainable tree holds, or None (a whole model)."""
  found = [m for m in METHODS.values() if m.owns(params)]
  return found[0] if len(found) == 1 else None


__all__ = ["METHODS", "DeepPrompts", "Method", "PTuning", "PrefixTuning", "PromptTuning",
           "detect", "from_description"]
