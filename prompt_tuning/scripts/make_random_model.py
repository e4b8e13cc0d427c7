"""Writes a randomly initialised T5 in the Hugging Face layout, with the package vocabulary.

    python -m prompt_tuning.scripts.make_random_model --output=/tmp/tiny_t5 [--preset=tiny]

For trying the pipeline end to end and for tests: the weights are random, so a prompt
tuned on it learns little beyond the majority class. Pretrained models are read with
`INITIAL_CHECKPOINT_PATH` (Hugging Face, T5X or our own checkpoints).
"""
from __future__ import annotations

import argparse
import sys

import jax

from prompt_tuning.io import write_hf_checkpoint
from prompt_tuning.models import get_config
from prompt_tuning.models.network import T5


def write_random_model(output: str, preset: str = "tiny", seed: int = 0,
                       vocab_size: int | None = None, spiece_model: str | None = None,
                       overwrite: bool = False) -> str:
  """Random weights for `preset`, sized to the vocabulary (rounded up to 128 rows)."""
  from prompt_tuning.data.vocab import default_vocab_path, get_vocabulary
  spiece_model = spiece_model or default_vocab_path()
  if vocab_size is None:
    vocab_size = -(-get_vocabulary(spiece_model).vocab_size // 128) * 128
  config = get_config(preset, vocab_size=vocab_size)
  params = T5(config).init_params(jax.random.PRNGKey(seed))
  write_hf_checkpoint(output, config, params, spiece_model=spiece_model, overwrite=overwrite)
  return output


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output", required=True)
  parser.add_argument("--preset", default="tiny")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)
  try:
    path = write_random_model(args.output, args.preset, args.seed, overwrite=args.overwrite)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote a random {args.preset} T5 to {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
