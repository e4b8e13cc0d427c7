"""Converts a T5 checkpoint we can read into the Hugging Face layout transformers loads.

    python -m prompt_tuning.scripts.convert_checkpoint --input=MODEL_DIR \\
        --output=/tmp/t5_hf [--dtype=bfloat16] [--spiece_model=PATH] [--overwrite]

`--input` is anything `prompt_tuning.models.load_pretrained` reads: one of our training
runs (a MODEL_DIR, its checkpoints/ folder or one checkpoints/<step>/ folder; without a
step the latest), a T5X checkpoint folder or a Hugging Face folder. The output holds
`config.json`, `model.safetensors` and `spiece.model` (the package vocabulary unless
`--spiece_model` names another), so `T5ForConditionalGeneration.from_pretrained` and
`T5Tokenizer.from_pretrained` both load it. This is how the embedded models under
`prompt_tuning/assets/` were written from the pretraining and LM-adaptation runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import sys
from typing import Optional, Sequence

PROG = "python -m prompt_tuning.scripts.convert_checkpoint"


def convert(source, output, dtype: str = "float32", spiece_model: Optional[str] = None,
            overwrite: bool = False, dropout_rate: Optional[float] = None) -> pathlib.Path:
  """Reads `source` (any format load_pretrained knows) and writes it to `output` (HF).

  `dropout_rate` replaces the config's (pretraining often runs without dropout while
  fine-tuning from the checkpoint wants some: Google's T5.1.1 configs say 0.1).
  """
  from prompt_tuning.data.vocab import default_vocab_path
  from prompt_tuning.io import write_hf_checkpoint
  from prompt_tuning.models import load_pretrained
  config, params = load_pretrained(source)
  if dropout_rate is not None:
    if not 0.0 <= dropout_rate < 1.0:
      raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    config = dataclasses.replace(config, dropout_rate=dropout_rate)
  return write_hf_checkpoint(output, config, params, dtype=dtype,
                             spiece_model=spiece_model or default_vocab_path(),
                             overwrite=overwrite)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  parser.add_argument("--input", required=True,
                      help="a MODEL_DIR (or one checkpoints/<step>/), T5X or HF folder")
  parser.add_argument("--output", required=True, help="the folder to write")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                      help="the weights' type on disk (default float32)")
  parser.add_argument("--spiece_model", default=None,
                      help="SentencePiece model to copy beside the weights (default: the "
                      "package vocabulary)")
  parser.add_argument("--dropout_rate", type=float, default=None,
                      help="the dropout rate the written config.json carries (default: the "
                      "checkpoint's)")
  parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Returns 0 on success, 1 (with one line on stderr) if the checkpoint cannot be converted."""
  args = _parser().parse_args(argv)
  logging.getLogger("absl").setLevel(logging.ERROR)
  from prompt_tuning.io import CheckpointError
  try:
    path = convert(args.input, args.output, args.dtype, args.spiece_model, args.overwrite,
                   args.dropout_rate)
  except (CheckpointError, OSError, ValueError) as e:
    print(f"convert_checkpoint: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 1
  size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
  print(f"wrote {args.input} as a Hugging Face T5 ({args.dtype}, {size:.1f} MB) to {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
