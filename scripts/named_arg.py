"""`NAME=VALUE` command-line values, for the scripts that compare named runs or models."""
from __future__ import annotations

import argparse
from typing import Callable


def name_equals(value_name: str) -> Callable[[str], tuple[str, str]]:
  """An argparse `type` turning `NAME=VALUE` into `(name, value)`; anything else is a
  usage error naming the expected form (`NAME=<value_name>`)."""
  def parse(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
      raise argparse.ArgumentTypeError(f"expected NAME={value_name}, got {text!r}")
    return name, value
  parse.__name__ = f"NAME={value_name}"  # argparse names the type in its error
  return parse
