"""Writes what a training checkpoint's tuning method ships, without the model.

    python -m prompt_tuning.scripts.export_prompt --checkpoint_dir=MODEL_DIR \\
        [--step=N] --output=prompt.npy          # prompt tuning: one [p, d] array
    python -m prompt_tuning.scripts.export_prompt --checkpoint_dir=MODEL_DIR \\
        --output=prefixes.npz                   # prefix tuning: named keys and values

`--checkpoint_dir` is a MODEL_DIR, its checkpoints/ folder or one checkpoints/<step>/
folder; without `--step` the latest checkpoint is read. The method (and the model's
config) come from MODEL_DIR/config.json. A method with one array writes `.npy`, one
with several `.npz`; beside it `<output>.json` names the method, the arrays' shapes,
the model's T5Config and a fingerprint of the frozen weights, so eval and infer refuse
the file on another model. Only the method's own arrays are read: neither the frozen
model nor a matching mesh is needed.
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
  parser.add_argument("--output", required=True,
                      help="the file to write: .npy (one array) or .npz (several)")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Returns 0 on success, 1 (with one line on stderr) if nothing can be exported."""
  args = _parser().parse_args(argv)
  # orbax logs every read through absl; the user wants the one line below. Importing
  # jax and orbax only now keeps --help and usage errors instant.
  logging.getLogger("absl").setLevel(logging.ERROR)
  from prompt_tuning.io import CheckpointError, save_export
  from prompt_tuning.train import checkpoints
  try:
    step, arrays, sidecar = checkpoints.read_export(args.checkpoint_dir, args.step)
    path = save_export(args.output, arrays, sidecar)
  except (CheckpointError, OSError) as e:
    print(f"export_prompt: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 1
  if len(arrays) == 1:
    (value,) = arrays.values()
    what = f"the prompt of step {step}, shape {tuple(value.shape)} {value.dtype},"
  else:
    size = sum(v.size for v in arrays.values())
    what = f"{len(arrays)} arrays of step {step} ({size} values, {sidecar and sidecar['method']}),"
  print(f"wrote {what} to {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
