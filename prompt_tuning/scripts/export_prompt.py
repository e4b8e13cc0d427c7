"""Writes the prompt of a training checkpoint to a `.npy` file, without the model.

    python -m prompt_tuning.scripts.export_prompt --checkpoint_dir=MODEL_DIR \\
        [--step=N] --output=prompt.npy

`--checkpoint_dir` is a MODEL_DIR, its checkpoints/ folder or one checkpoints/<step>/
folder; without `--step` the latest checkpoint is read. Only the prompt's own arrays are
read: neither the frozen model nor a matching mesh is needed.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

PROG = "python -m prompt_tuning.scripts.export_prompt"


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  parser.add_argument("--checkpoint_dir", required=True,
                      help="MODEL_DIR, MODEL_DIR/checkpoints or MODEL_DIR/checkpoints/<step>")
  parser.add_argument("--step", type=int, default=None,
                      help="the checkpoint step to read (default: the latest)")
  parser.add_argument("--output", required=True, help="the .npy file to write")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Returns 0 on success, 1 (with one line on stderr) if the prompt cannot be exported."""
  args = _parser().parse_args(argv)
  # orbax logs every read through absl; the user wants the one line below. Importing
  # jax and orbax only now keeps --help and usage errors instant.
  logging.getLogger("absl").setLevel(logging.ERROR)
  from prompt_tuning.io import CheckpointError, save_prompt_npy
  from prompt_tuning.train import checkpoints
  try:
    step, prompt = checkpoints.read_prompt(args.checkpoint_dir, args.step)
    path = save_prompt_npy(args.output, prompt)
  except (CheckpointError, OSError) as e:
    print(f"export_prompt: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 1
  print(f"wrote the prompt of step {step}, shape {tuple(prompt.shape)} {prompt.dtype}, "
        f"to {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
