"""Our own training runs on disk, read without the model or train/: MODEL_DIR layout,
config.json, and the arrays of any checkpoint step.

    <model_dir>/config.json             the T5Config and run settings (`save_model_config`)
    <model_dir>/checkpoints/<step>/     params/, opt_state/, progress/ (orbax items)

`prompt_tuning.train.checkpoints` writes these; this module reads them, so
`load_pretrained` knows our full-model runs without importing train.
"""
from __future__ import annotations

import json
import logging
import pathlib
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from prompt_tuning.io.errors import CheckpointError
from prompt_tuning.io.files import atomic_file
from prompt_tuning.models.config import T5Config
from prompt_tuning.models.network import T5_PARAM_TREES

CHECKPOINTS = "checkpoints"
CONFIG_FILE = "config.json"
CONFIG_FORMAT = "prompt_tuning.model_dir/1"
PARAMS, OPT_STATE, PROGRESS = "params", "opt_state", "progress"


def read_handlers() -> dict[str, ocp.CheckpointHandler]:
  """The orbax handlers of the items every checkpoint holds."""
  return {PARAMS: ocp.PyTreeCheckpointHandler(), OPT_STATE: ocp.PyTreeCheckpointHandler(),
          PROGRESS: ocp.JsonCheckpointHandler()}


def _resolve_step(manager: ocp.CheckpointManager, directory: pathlib.Path,
                  step: Optional[int]) -> int:
  steps = sorted(manager.all_steps())
  if not steps:
    raise CheckpointError(f"no checkpoint found in {directory}: it holds no finished "
                          "checkpoints/<step>/ folder written by prompt_tuning training")
  if step is None:
    return steps[-1]
  if int(step) not in steps:
    raise CheckpointError(f"checkpoint step {step} does not exist in {directory}; "
                          f"available steps: {steps}")
  return int(step)


def _item_metadata(manager: ocp.CheckpointManager, directory, step: int, item: str):
  metadata = manager.item_metadata(step)
  value = metadata.get(item) if hasattr(metadata, "get") else None
  if value is None:
    raise CheckpointError(f"checkpoint {directory}/{step} has no '{item}' item: it was not "
                          "written by prompt_tuning.train.checkpoints.Checkpointer")
  return value


def locate(path) -> tuple[pathlib.Path, Optional[int]]:
  """`(checkpoints folder, step or None)` for a MODEL_DIR, its checkpoints/ or one step."""
  path = pathlib.Path(path)
  if not path.is_dir():
    raise CheckpointError(f"checkpoint folder {path} does not exist" if not path.exists()
                          else f"{path} is a file; pass MODEL_DIR or MODEL_DIR/checkpoints")
  if (path / CHECKPOINTS).is_dir():
    return path / CHECKPOINTS, None
  if path.name.isdigit() and (path / PARAMS).is_dir():
    return path.parent, int(path.name)
  return path, None


def read_params(path, step: Optional[int] = None) -> tuple[int, dict[str, Any]]:
  """`(step, params)`: the trainable parameters of a checkpoint as host numpy arrays.

  `path` is a MODEL_DIR, its checkpoints/ folder or one checkpoints/<step>/ folder;
  `step` defaults to the one `path` names, else the latest. Needs no model: the arrays
  are read as saved, whatever mesh wrote them.
  """
  directory, path_step = locate(path)
  if step is not None and path_step is not None and int(step) != path_step:
    raise CheckpointError(f"{path} is checkpoint step {path_step} but step {step} was asked "
                          "for; pass the checkpoints folder to choose another step")
  step = path_step if step is None else step
  options = ocp.CheckpointManagerOptions(read_only=True, create=False)
  with ocp.CheckpointManager(directory, options=options,
                             item_handlers=read_handlers()) as manager:
    step = _resolve_step(manager, directory, step)
    metadata = _item_metadata(manager, directory, step, PARAMS)
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    restored = manager.restore(step, args=ocp.args.Composite(
        **{PARAMS: ocp.args.PyTreeRestore(restore_args=as_numpy)}))
  return step, restored[PARAMS]


def save_model_config(model_dir, config: T5Config, extra: Optional[dict] = None) -> pathlib.Path:
  """Writes `<model_dir>/config.json`: the T5Config and `extra` run settings (JSON values)."""
  extra = dict(extra or {})
  reserved = {"format", "t5_config"} & set(extra)
  if reserved:
    raise ValueError(f"extra may not use the reserved keys {sorted(reserved)}")
  path = pathlib.Path(model_dir) / CONFIG_FILE
  text = json.dumps({"format": CONFIG_FORMAT, "t5_config": config.to_dict(), **extra},
                    indent=2, sort_keys=True)
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
      f.write(text.encode("utf-8"))
  return path


def load_model_config(model_dir) -> tuple[T5Config, dict[str, Any]]:
  """`(T5Config, extra)` from `<model_dir>/config.json` as `save_model_config` wrote it."""
  path = pathlib.Path(model_dir) / CONFIG_FILE
  if not path.is_file():
    raise CheckpointError(f"{path} is missing: the model's T5Config is needed to read the "
                          "checkpoint; it is written by the training run (save_model_config)")
  try:
    data = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise CheckpointError(f"cannot read {path} as JSON: {e}") from None
  if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
    raise CheckpointError(f"{path} is not a prompt_tuning run config (format "
                          f"{CONFIG_FORMAT!r})")
  extra = {k: v for k, v in data.items() if k not in ("format", "t5_config")}
  try:
    return T5Config.from_dict(data["t5_config"]), extra
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"{path} holds no valid t5_config: {e}") from None


def _is_run_config(path: pathlib.Path) -> bool:
  try:
    return json.loads(path.read_text(encoding="utf-8")).get("format") == CONFIG_FORMAT
  except (OSError, ValueError, AttributeError):
    return False


def is_model_dir(path) -> bool:
  """Whether `path` is one of our runs: a MODEL_DIR, its checkpoints/ or a step folder."""
  path = pathlib.Path(path)
  if not path.is_dir():
    return False
  if _is_run_config(path / CONFIG_FILE):
    return True
  directory, step = locate(path)
  if step is not None:
    return True
  return directory.is_dir() and any(
      d.name.isdigit() and (d / PARAMS).is_dir() for d in directory.iterdir())


def read_orbax_checkpoint(path) -> tuple[T5Config, dict[str, Any]]:
  """`(T5Config, params)` of a run that trained the whole model, as float32 numpy.

  `path` is the MODEL_DIR (latest step), its checkpoints/ or one checkpoints/<step>/
  folder; the config comes from MODEL_DIR/config.json. A tuning method's parameters are
  left out (export them with `python -m prompt_tuning.scripts.export_prompt`).
  """
  directory, _ = locate(path)
  path = pathlib.Path(path)
  config, _ = load_model_config(path if (path / CONFIG_FILE).is_file() else directory.parent)
  step, params = read_params(path)
  model = {k: v for k, v in params.items() if k in T5_PARAM_TREES}
  if not model:
    raise CheckpointError(f"{path} (step {step}) is the checkpoint of a tuning method "
                          "(a prompt, prefixes); it holds no model weights — pass the base "
                          "model as INITIAL_CHECKPOINT_PATH (export the method's arrays with "
                          "python -m prompt_tuning.scripts.export_prompt)")
  if "token_embedder" not in model:
    raise CheckpointError(f"{path} (step {step}) holds only the trained part of the model "
                          f"({_short(sorted(model))}); the frozen rest lives in the base "
                          "checkpoint — pass the base model as INITIAL_CHECKPOINT_PATH")
  if len(model) < len(params):
    logging.info("%s: leaving out the tuning method's parameters %s", path,
                 sorted(set(params) - set(model)))
  to_float32 = lambda x: np.asarray(x, np.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return config, jax.tree.map(to_float32, model)


def _short(items, limit: int = 8) -> str:
  items = list(items)
  return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


