"""Checkpoints of a training run: the train state through orbax, the prompt as `.npy`.

    <model_dir>/config.json             the T5Config and run settings (`save_model_config`)
    <model_dir>/checkpoints/<step>/     params/ and opt_state/ (orbax trees), progress/ (JSON:
                                        step and data position), data_iterator/ (optional: each
                                        process's tf.data iterator, `tf.train.Checkpoint`)
    <model_dir>/prompts/step_<N>.npy    the prompt at every checkpoint (prompt tuning)

Only the train state is saved: the trainable parameters and their optimiser state,
never the frozen model, so a prompt-tuning checkpoint is a few kilobytes. A run can add
its input pipeline's iterator (shuffle and prefetch buffers: megabytes), so resuming
does not re-read the data stream up to the data position.
`orbax.checkpoint.CheckpointManager` does the work: saves are atomic (written to a
temporary folder, renamed when complete), asynchronous, and old steps are dropped
beyond `keep`.

Importing this module registers our full-model checkpoints (pretraining, LM adaptation,
full fine-tuning) with `prompt_tuning.io.load_pretrained`.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import pathlib
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from prompt_tuning.io import CheckpointError, register_format, save_prompt_npy
from prompt_tuning.io.files import atomic_file
from prompt_tuning.models.config import T5Config
from prompt_tuning.train import step as step_lib
from prompt_tuning.train.state import TrainState, split_params

CHECKPOINTS = "checkpoints"
PROMPTS = "prompts"
CONFIG_FILE = "config.json"
CONFIG_FORMAT = "prompt_tuning.model_dir/1"
PARAMS, OPT_STATE, PROGRESS = "params", "opt_state", "progress"
DATA_ITERATOR = "data_iterator"
PROMPT_PATH = ("encoder_prompt", "prompt")
# Top-level parameter trees of prompt modules, beside T5's own.
PROMPT_MODULES = ("encoder_prompt",)


class CheckpointSaveError(RuntimeError):
  """A checkpoint could not be written; the previous ones are intact."""


def _iterator_prefix(directory) -> str:
  """Where this process's iterator lies in an item folder; the name holds the process
  count, since another number of hosts reads other shards of the data."""
  return os.fspath(pathlib.Path(directory) / f"process_{jax.process_index()}_of_"
                                             f"{jax.process_count()}")


def _iterator_saved(directory) -> bool:
  return pathlib.Path(_iterator_prefix(directory) + ".index").exists()


class DataIteratorHandler(ocp.CheckpointHandler):
  """Writes and reads a `tf.data` iterator's state with `tf.train.Checkpoint`, one file
  set per process. Synchronous: orbax runs it before `save` returns, while the iterator
  still stands at the saved data position."""

  def save(self, directory, args: "DataIteratorSave"):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.train.Checkpoint(iterator=args.iterator).write(_iterator_prefix(directory))

  def restore(self, directory, args: "DataIteratorRestore"):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if not _iterator_saved(directory):
      raise CheckpointError(f"{directory} holds no data iterator for process "
                            f"{jax.process_index()} of {jax.process_count()}")
    tf.train.Checkpoint(iterator=args.iterator).read(
        _iterator_prefix(directory)).assert_consumed()
    return args.iterator


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
  iterator: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
  iterator: Any


def _item_handlers() -> dict[str, ocp.CheckpointHandler]:
  return {PARAMS: ocp.PyTreeCheckpointHandler(), OPT_STATE: ocp.PyTreeCheckpointHandler(),
          PROGRESS: ocp.JsonCheckpointHandler(), DATA_ITERATOR: DataIteratorHandler()}


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """`{'a/b': shape}` for every array (or array metadata) leaf of `tree`."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves}


def _shape_problems(saved: dict, wanted: dict, what: str) -> list[str]:
  problems = [f"{what} {path}: the checkpoint has shape {saved[path]}, the model {shape}"
              for path, shape in wanted.items() if path in saved and saved[path] != shape]
  missing = sorted(set(wanted) - set(saved))
  unexpected = sorted(set(saved) - set(wanted))
  if missing:
    problems.append(f"{len(missing)} {what}(s) the model has but the checkpoint lacks, "
                    f"under {_tops(missing)}: {_short(missing)}")
  if unexpected:
    problems.append(f"{len(unexpected)} {what}(s) the checkpoint has but the model lacks, "
                    f"under {_tops(unexpected)}: {_short(unexpected)}")
  return problems


def _tops(paths) -> str:
  return ", ".join(sorted({p.split("/")[0] for p in paths}))


def _short(items, limit: int = 8) -> str:
  items = list(items)
  return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _host_scalar(x) -> int:
  """An int from a (possibly multi-host, replicated) scalar array."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)
  return int(np.asarray(x))


def _prompt_of(params: Any) -> Optional[Any]:
  node = params
  for key in PROMPT_PATH:
    if not hasattr(node, "get") or key not in node:
      return None
    node = node[key]
  return node


def _host_array(x) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def _disk_hint(error: BaseException) -> str:
  seen = error
  while seen is not None:
    if (isinstance(seen, OSError) and seen.errno == errno.ENOSPC) or "No space left" in str(seen):
      return "the disk is full: free space or point MODEL_DIR at a larger disk"
    seen = seen.__cause__ or seen.__context__
  if isinstance(error, OSError):
    return "disk full, or no permission to write?"
  return "disk full?"


class Checkpointer:
  """Saves and restores the train state of one run in `<model_dir>/checkpoints/<step>/`.

      ckpt = Checkpointer(model_dir, keep=3)
      ckpt.save(step, state, data_position)        # returns at once; writes in background
      ckpt.save(step, state, data_position, data_iterator=it)   # also the tf.data iterator
      state, data_position = ckpt.restore(abstract_state(program))
      ckpt.restore_data_iterator(it, step)          # False: none saved; skip to data_position
      ckpt.close()

  A save that fails (a full disk) raises `CheckpointSaveError` from `save` or, for an
  asynchronous save, from the next `save`, `wait_until_finished` or `close`; the
  checkpoints written before it stay readable.
  """

  def __init__(self, model_dir, keep: Optional[int] = 3, async_save: bool = True):
    if keep is not None and (not isinstance(keep, int) or keep < 1):
      raise ValueError(f"keep must be a positive number of checkpoints (or None for all), "
                       f"got {keep!r}")
    self.model_dir = pathlib.Path(model_dir)
    self.directory = self.model_dir / CHECKPOINTS
    self.prompt_dir = self.model_dir / PROMPTS
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(keep) if keep else None,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=_item_handlers())
    self._pending: Optional[int] = None  # an asynchronous save not yet known to be done

  def latest_step(self) -> Optional[int]:
    """The newest step saved (a save still in progress included), or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: TrainState, data_position: int, force: bool = False,
           data_iterator: Any = None) -> bool:
    """Saves `state` (trainable params, opt state, step) and the data position as `step`.

    `data_position` is the number of batches consumed, so a resumed run reads on from
    there. `data_iterator`, a `tf.data` iterator standing at that position, is saved too
    when given (before this returns). Returns False (and writes nothing) when `step` is
    already saved or, without `force`, is not newer than the latest checkpoint. Writes
    `prompts/step_<step>.npy` too when the trainable parameters hold
    `encoder_prompt/prompt`.
    """
    if not isinstance(state, TrainState):
      raise TypeError(f"save expects a TrainState, got {type(state).__name__}")
    step, data_position = int(step), int(data_position)
    if step < 0 or data_position < 0:
      raise ValueError(f"step ({step}) and data_position ({data_position}) must be >= 0")
    self._finish_pending()
    if step in self._manager.all_steps():
      logging.info("checkpoint %d already exists in %s; not saving it again", step,
                   self.directory)
      return False
    prompt = _prompt_of(state.params)
    prompt = None if prompt is None else _host_array(prompt)
    progress = {"step": _host_scalar(state.step), "data_position": data_position}
    items = {PARAMS: ocp.args.PyTreeSave(state.params),
             OPT_STATE: ocp.args.PyTreeSave(state.opt_state),
             PROGRESS: ocp.args.JsonSave(progress)}
    if data_iterator is not None:
      items[DATA_ITERATOR] = DataIteratorSave(data_iterator)
    args = ocp.args.Composite(**items)
    try:
      saved = self._manager.save(step, args=args, force=force)
    except Exception as e:  # pylint: disable=broad-except
      self._raise_save_error(step, e)
    if not saved:
      return False
    self._pending = step
    if prompt is not None and jax.process_index() == 0:
      try:
        self.prompt_dir.mkdir(parents=True, exist_ok=True)
        save_prompt_npy(self.prompt_path(step), prompt)
      except OSError as e:
        raise CheckpointSaveError(f"could not write the prompt of checkpoint {step} to "
                                  f"{self.prompt_path(step)}: {e} ({_disk_hint(e)})") from e
    return True

  def prompt_path(self, step: int) -> pathlib.Path:
    return self.prompt_dir / f"step_{int(step)}.npy"

  def restore(self, abstract_state: TrainState,
              step: Optional[int] = None) -> tuple[TrainState, int]:
    """Restores `(state, data_position)` of `step` (default: the latest).

    `abstract_state` is a TrainState of `jax.ShapeDtypeStruct`s with shardings (see
    `abstract_state(program)`): each device reads only its own shard. Raises
    `CheckpointError` if the step is missing or the checkpoint does not fit the model.
    """
    if not isinstance(abstract_state, TrainState):
      raise TypeError(f"restore expects a TrainState of jax.ShapeDtypeStruct, got "
                      f"{type(abstract_state).__name__}; build one with abstract_state(program)")
    unsharded = [p for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]
                 if getattr(leaf, "sharding", None) is None]
    if unsharded:
      raise ValueError(f"abstract_state has leaves without a sharding (e.g. "
                       f"{jax.tree_util.keystr(unsharded[0])}); build it with "
                       "abstract_state(program) so arrays are restored into their shards")
    self._finish_pending()
    step = _resolve_step(self._manager, self.directory, step)
    _check_fits(self._manager, self.directory, step, abstract_state)
    restore_args = lambda tree: ocp.args.PyTreeRestore(
        tree, restore_args=ocp.checkpoint_utils.construct_restore_args(tree))
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        PARAMS: restore_args(abstract_state.params),
        OPT_STATE: restore_args(abstract_state.opt_state),
        PROGRESS: ocp.args.JsonRestore()}))
    progress = restored[PROGRESS]
    step_value = np.asarray(progress["step"], abstract_state.step.dtype)
    state = TrainState(step=jax.device_put(step_value, abstract_state.step.sharding),
                       params=restored[PARAMS], opt_state=restored[OPT_STATE])
    return state, int(progress["data_position"])

  def has_data_iterator(self, step: int) -> bool:
    """Whether checkpoint `step` holds a data iterator for this process and process count."""
    return self._data_iterator_step(step) is not None

  def _data_iterator_step(self, step: Optional[int]) -> Optional[int]:
    """`step` resolved (None: the latest) if it holds this process's iterator, else None."""
    self._finish_pending()
    step = _resolve_step(self._manager, self.directory, step)
    return step if _iterator_saved(self.directory / str(step) / DATA_ITERATOR) else None

  def restore_data_iterator(self, iterator: Any, step: int) -> bool:
    """Restores `iterator`, a fresh iterator over the same tf.data pipeline, to where the
    iterator saved with `step` stood. Returns False, leaving `iterator` as it was, when
    that checkpoint holds none for this process and process count; the caller then
    skips to the data position instead. Raises `CheckpointError` when the saved state
    does not fit the pipeline (another task, lengths or batch size)."""
    step = self._data_iterator_step(step)
    if step is None:
      return False
    try:
      self._manager.restore(step, args=ocp.args.Composite(
          **{DATA_ITERATOR: DataIteratorRestore(iterator)}))
    except Exception as e:  # pylint: disable=broad-except
      detail = " ".join(str(e).split())[:300]
      raise CheckpointError(
          f"the data iterator saved with checkpoint {self.directory}/{step} does not fit this "
          f"run's input pipeline: {detail}. Resume with the task, lengths and batch size it "
          f"was saved with, or delete {self.directory / str(step) / DATA_ITERATOR} to skip "
          "to the data position instead") from e
    return True

  def wait_until_finished(self) -> None:
    """Blocks until a background save is on disk; raises CheckpointSaveError if it failed."""
    self._finish_pending()

  def close(self) -> None:
    """Waits for a background save (raising CheckpointSaveError if it failed), then closes."""
    try:
      self._finish_pending()
    finally:
      self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def _finish_pending(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._raise_save_error(self._pending, e)
    self._pending = None

  def _raise_save_error(self, step: Optional[int], error: BaseException):
    self._pending = None
    self._manager.reload()  # forget the failed step; steps on disk are what is good
    good = [s for s in self._manager.all_steps() if s != step]
    latest = (f"the latest good checkpoint is step {max(good)} in {self.directory}" if good
              else f"there is no good checkpoint in {self.directory} yet")
    detail = " ".join(str(error).split())[:300] or type(error).__name__
    raise CheckpointSaveError(f"could not save checkpoint {step}: {detail} "
                              f"({_disk_hint(error)}) — {latest}") from error


def abstract_state(program) -> TrainState:
  """The TrainState of `program` as `jax.ShapeDtypeStruct`s carrying its shardings."""
  boxed = step_lib.abstract_params(program.model)
  trainable, _ = split_params(nn.meta.unbox(boxed), program.trainable)
  shapes = jax.eval_shape(lambda p: TrainState.create(p, program.tx), trainable)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      shapes, program.state_shardings)


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


def _check_fits(manager, directory, step: int, abstract: TrainState) -> None:
  """Raises CheckpointError naming each parameter whose shape differs from the model's."""
  saved = _leaf_shapes(_item_metadata(manager, directory, step, PARAMS))
  problems = _shape_problems(saved, _leaf_shapes(abstract.params), "parameter")
  if problems:
    raise CheckpointError(
        f"checkpoint {directory}/{step} does not fit this model: " + "; ".join(problems)
        + ". MODEL_DIR holds the checkpoint of another model or prompt (another size, "
        "prompt length or trainable set): use a fresh MODEL_DIR, or the settings it was "
        "trained with")
  saved = _leaf_shapes(_item_metadata(manager, directory, step, OPT_STATE))
  problems = _shape_problems(saved, _leaf_shapes(abstract.opt_state), "optimiser state")
  if problems:
    raise CheckpointError(
        f"checkpoint {directory}/{step} was written with another optimiser: "
        + "; ".join(problems) + ". Train with the optimiser it was written with, or use a "
        "fresh MODEL_DIR")


# Reading without the model: raw numpy parameters, for export and load_pretrained.

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
                             item_handlers=_item_handlers()) as manager:
    step = _resolve_step(manager, directory, step)
    metadata = _item_metadata(manager, directory, step, PARAMS)
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    restored = manager.restore(step, args=ocp.args.Composite(
        **{PARAMS: ocp.args.PyTreeRestore(restore_args=as_numpy)}))
  return step, restored[PARAMS]


def read_prompt(path, step: Optional[int] = None) -> tuple[int, np.ndarray]:
  """`(step, prompt [p, d])` from any of our checkpoints; CheckpointError if it has none."""
  step, params = read_params(path, step)
  prompt = _prompt_of(params)
  if prompt is None:
    raise CheckpointError(f"checkpoint step {step} under {path} holds no prompt (no "
                          f"{'/'.join(PROMPT_PATH)}; its parameters start with "
                          f"{_short(sorted(params))}): it is not a prompt-tuning checkpoint")
  return step, np.asarray(prompt)


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
  folder; the config comes from MODEL_DIR/config.json. A prompt module's parameters are
  left out (export them with `python -m prompt_tuning.scripts.export_prompt`).
  """
  directory, _ = locate(path)
  path = pathlib.Path(path)
  config, _ = load_model_config(path if (path / CONFIG_FILE).is_file() else directory.parent)
  step, params = read_params(path)
  model = {k: v for k, v in params.items() if k not in PROMPT_MODULES}
  if not model:
    raise CheckpointError(f"{path} (step {step}) is a prompt-tuning checkpoint; it holds no "
                          "model weights — pass the base model as INITIAL_CHECKPOINT_PATH "
                          "(export the prompt with python -m prompt_tuning.scripts.export_prompt)")
  if "token_embedder" not in model:
    raise CheckpointError(f"{path} (step {step}) holds only the trained part of the model "
                          f"({_short(sorted(model))}); the frozen rest lives in the base "
                          "checkpoint — pass the base model as INITIAL_CHECKPOINT_PATH")
  if len(model) < len(params):
    logging.info("%s: leaving out the prompt parameters %s", path,
                 sorted(set(params) - set(model)))
  to_float32 = lambda x: np.asarray(x, np.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return config, jax.tree.map(to_float32, model)


register_format("prompt_tuning training run (MODEL_DIR with config.json and "
                "checkpoints/<step>/)", is_model_dir, read_orbax_checkpoint)


def check_params_fit(saved: Any, wanted: Any, where: str) -> None:
  """Raises CheckpointError naming each parameter whose shape differs from the model's."""
  problems = _shape_problems(_leaf_shapes(saved), _leaf_shapes(wanted), "parameter")
  if problems:
    raise CheckpointError(f"{where} does not fit this model: " + "; ".join(problems)
                          + ". Use the settings it was trained with (e.g. PROMPT_LENGTH)")
