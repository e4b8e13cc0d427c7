"""Writes what a training checkpoint's tuning method ships, without the model.

    python -m prompt_tuning.scripts.export_prompt --checkpoint_dir=MODEL_DIR \\
        [--step=N] --output=prompt.npy          # prompt tuning: one [p, d] array
    python -m prompt_tuning.scripts.export_prompt --checkpoint_dir=MODEL_DIR \\
        --output=prefixes.npz                   # prefix tuning: named keys and values

    python -m prompt_tuning.scripts.export_prompt --checkpoint_dir=MODEL_DIR \\
        --output=DIR --format=peft [--base_model=HF_DIR]   # a PEFT adapter folder

`--checkpoint_dir` is a MODEL_DIR, its checkpoints/ folder or one checkpoints/<step>/
folder; without `--step` the latest checkpoint is read. The method (and the model's
config) come from MODEL_DIR/config.json. A method with one array writes `.npy`, one
with several `.npz`; beside it `<output>.json` names the method, the arrays' shapes,
the model's T5Config and a fingerprint of the frozen weights, so eval and infer refuse
the file on another model. Only the method's own arrays are read: neither the frozen
model nor a matching mesh is needed.

`--format=peft` writes a Hugging Face PEFT prompt-tuning adapter folder
(`adapter_config.json` + `adapter_model.safetensors`, see `prompt_tuning.io.peft`) for
any method whose export is one `[p, d]` prompt placed in front of the inputs (PEFT's
only place); prefix tuning is refused with the reasons. Its `base_model_name_or_path`
is `--base_model`, else the run's INITIAL_CHECKPOINT_PATH as MODEL_DIR/config.gin
records it; either must be a Hugging Face folder of the run's model, its shape and the
fingerprint of its weights checked (`convert_checkpoint` writes one from other formats).
"""
from __future__ import annotations

import argparse
import ast
import logging
import pathlib
import re
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
                      help="the file to write: .npy (one array) or .npz (several); with "
                      "--format=peft the adapter folder")
  parser.add_argument("--format", choices=("numpy", "peft"), default="numpy",
                      help="numpy: .npy/.npz and a JSON sidecar; peft: a Hugging Face PEFT "
                      "prompt-tuning adapter folder")
  parser.add_argument("--base_model", default=None,
                      help="with --format=peft: the Hugging Face folder of the frozen model "
                      "(default: the run's recorded INITIAL_CHECKPOINT_PATH)")
  parser.add_argument("--overwrite", action="store_true",
                      help="with --format=peft: replace an existing adapter folder")
  return parser


def _gin_value(text: str, name: str) -> Optional[str]:
  """The right-hand side bound to `name` in a gin config's text, or None."""
  match = re.search(rf"^{re.escape(name)}\s*=\s*(.+?)\s*$", text, re.MULTILINE)
  return match.group(1) if match else None


def recorded_base_model(model_dir: pathlib.Path) -> Optional[str]:
  """The INITIAL_CHECKPOINT_PATH MODEL_DIR/config.gin records (a path or an embedded
  model), or None where the run recorded none we can read."""
  file = model_dir / "config.gin"
  if not file.is_file():
    return None
  text = file.read_text(encoding="utf-8")
  value = _gin_value(text, "ModelSpec.initial_checkpoint_path")
  if value and value.startswith("%"):
    value = _gin_value(text, value[1:])
  if value == "@embedded_model_path()":
    from prompt_tuning.assets import embedded_model_path
    name = _gin_value(text, "embedded_model_path.name")
    try:
      return embedded_model_path(ast.literal_eval(name) if name else "t5_lm_adapted")
    except (ValueError, SyntaxError, FileNotFoundError):
      return None
  try:
    value = ast.literal_eval(value) if value else None
  except (ValueError, SyntaxError):
    return None
  return str(pathlib.Path(value).expanduser()) if isinstance(value, str) else None


def _export_peft(args, arrays, sidecar) -> pathlib.Path:
  """Writes the PEFT adapter folder of a one-prompt export; refuses anything else."""
  from prompt_tuning.io import CheckpointError, peft, runs
  from prompt_tuning.models.config import T5Config
  method = (sidecar or {}).get("method")
  if method == "prefix_tuning" or len(arrays) != 1:
    attention = (sidecar or {}).get("settings", {}).get("attention")
    kinds = attention or sorted({n.split("/")[0] for n in arrays})
    if set(kinds) <= set(peft.PREFIX_KINDS_PEFT_LACKS):
      raise peft.refuse_prefixes(kinds)
    raise CheckpointError(f"{method or 'this method'} exports {len(arrays)} arrays; a PEFT "
                          "adapter is written for a method whose export is one [p, d] prompt")
  if sidecar is None:
    raise CheckpointError(f"{args.checkpoint_dir} has no config.json: the model's T5Config "
                          "is needed for the adapter's config; pass the run's MODEL_DIR")
  placement = sidecar.get("settings", {}).get("placement", "prefix")
  if placement != "prefix":
    raise CheckpointError(f"this prompt was trained with placement {placement!r}, but PEFT "
                          "puts a prompt in front of the inputs (placement 'prefix'); it "
                          "would compute something else there")
  config = T5Config.from_dict(sidecar["t5_config"])
  base = args.base_model
  if base is None:
    model_dir = runs.locate(args.checkpoint_dir)[0].parent
    base = recorded_base_model(model_dir)
    if base is None:
      raise CheckpointError(f"{model_dir}/config.gin records no INITIAL_CHECKPOINT_PATH: "
                            "pass --base_model, the Hugging Face folder of the frozen model")
  base = str(pathlib.Path(base).resolve())
  peft.check_base_model(base, config)
  trained_on = sidecar.get("frozen_fingerprint")
  if trained_on:
    from prompt_tuning.io import fingerprint, load_pretrained
    if fingerprint(load_pretrained(base)[1]) != trained_on:
      raise CheckpointError(f"the base model {base} has the run's shape but other weights "
                            f"than the prompt was trained on (fingerprint {trained_on}): "
                            "pass --base_model naming the Hugging Face folder of the run's base "
                            "(converted at the dtype it was trained from)")
  (prompt,) = arrays.values()
  return peft.write_peft_prompt(args.output, prompt, config, base, overwrite=args.overwrite)


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
    if args.format == "peft":
      path = _export_peft(args, arrays, sidecar)
    else:
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
  print(f"wrote {what} to {path}" + (" (a PEFT prompt-tuning adapter)"
                                     if args.format == "peft" else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
