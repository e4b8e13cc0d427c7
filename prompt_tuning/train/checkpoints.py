"""Checkpoints of a training run: the train state through orbax, the method's export.

    <model_dir>/config.json             the T5Config and run settings (`save_model_config`)
    <model_dir>/checkpoints/<step>/     params/ and opt_state/ (orbax trees), progress/ (JSON:
                                        step and data position), data_iterator/ (optional: each
                                        process's tf.data iterator, `tf.train.Checkpoint`)
    <model_dir>/prompts/step_<N>.npy    the method's export at every checkpoint (`.npy` for
                                        a prompt, `.npz` for several arrays), with a JSON
                                        sidecar (`step_<N>.npy.json`, see `io/exports.py`)

Only the train state is saved: the trainable parameters and their optimiser state,
never the frozen model, so a prompt-tuning checkpoint is a few kilobytes. A run can add
its input pipeline's iterator (shuffle and prefetch buffers: megabytes), so resuming
does not re-read the data stream up to the data position.
`orbax.checkpoint.CheckpointManager` does the work: saves are atomic (written to a
temporary folder, renamed when complete), asynchronous, and old steps are dropped
beyond `keep`.

Reading a run without the model (config.json, any step's arrays) is `prompt_tuning.io.runs`,
which `prompt_tuning.io.load_pretrained` uses for our full-model runs.
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

from prompt_tuning import methods as methods_lib
from prompt_tuning.io import exports
from prompt_tuning.io.errors import CheckpointError
from prompt_tuning.io.runs import (CHECKPOINTS, CONFIG_FILE, CONFIG_FORMAT, OPT_STATE,  # noqa: F401
                                   PARAMS, PROGRESS, _item_metadata, _resolve_step, _short,
                                   is_model_dir, load_model_config, locate, read_handlers,
                                   read_orbax_checkpoint, read_params, save_model_config)
from prompt_tuning.models.config import T5Config
from prompt_tuning.train import step as step_lib
from prompt_tuning.train.state import TrainState, split_params

PROMPTS = "prompts"
DATA_ITERATOR = "data_iterator"


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
  return {**read_handlers(), DATA_ITERATOR: DataIteratorHandler()}


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


def _host_scalar(x) -> int:
  """An int from a (possibly multi-host, replicated) scalar array."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)
  return int(np.asarray(x))


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


@dataclasses.dataclass(frozen=True)
class Export:
  """What every checkpoint also writes to `prompts/`: the method's arrays and sidecar.

  `config` and `frozen_fingerprint` (of the frozen weights, `io.exports.fingerprint`)
  go into the sidecar; a method that needs the config to export (prefix tuning's MLP)
  exports nothing without one.
  """
  method: methods_lib.Method
  config: Optional[T5Config] = None
  frozen_fingerprint: Optional[str] = None

  def arrays(self, params: Any) -> Optional[dict[str, np.ndarray]]:
    if self.config is None and self.method.export_needs_config:
      return None
    return self.method.export(params, self.config)

  def write(self, stem: pathlib.Path, params: Any, step: int) -> Optional[pathlib.Path]:
    """Writes `stem` + `.npy`/`.npz` and its sidecar; returns the path (None: nothing)."""
    arrays = self.arrays(params)
    if arrays is None:
      return None
    sidecar = (self.method.sidecar(self.config, self.frozen_fingerprint, step)
               if self.config is not None else None)
    path = stem.with_name(stem.name + exports.suffix_for(arrays))
    return exports.save_export(path, arrays, sidecar)


def default_export(params: Any) -> Optional[Export]:
  """The export of a checkpoint saved without one: that of the method its tree is."""
  method = methods_lib.detect(params)
  return None if method is None else Export(method.from_params(params))


class Checkpointer:
  """Saves and restores the train state of one run in `<model_dir>/checkpoints/<step>/`.

      ckpt = Checkpointer(model_dir, keep=3, export=Export(method, config, fingerprint))
      ckpt.save(step, state, data_position)        # returns at once; writes in background
      ckpt.save(step, state, data_position, data_iterator=it)   # also the tf.data iterator
      state, data_position = ckpt.restore(abstract_state(program))
      ckpt.restore_data_iterator(it, step)          # False: none saved; skip to data_position
      ckpt.close()

  A save that fails (a full disk) raises `CheckpointSaveError` from `save` or, for an
  asynchronous save, from the next `save`, `wait_until_finished` or `close`; the
  checkpoints written before it stay readable.
  """

  def __init__(self, model_dir, keep: Optional[int] = 3, async_save: bool = True,
               export: Optional[Export] = None):
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
    self.export = export
    self.last_export: Optional[pathlib.Path] = None  # the export the last save wrote

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
    the method's export to `prompts/step_<step>.npy` (or `.npz`) too: `export`'s, or
    without one, that of the method the trainable tree belongs to (none for a whole
    model).
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
    export = self.export or default_export(state.params)
    host_params = None if export is None else jax.tree.map(_host_array, state.params)
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
    if export is not None and jax.process_index() == 0:
      try:
        self.prompt_dir.mkdir(parents=True, exist_ok=True)
        self.last_export = export.write(self.prompt_dir / f"step_{step}", host_params, step)
      except OSError as e:
        raise CheckpointSaveError(f"could not write the export of checkpoint {step} to "
                                  f"{self.prompt_dir}: {e} ({_disk_hint(e)})") from e
    return True

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


def _saved_run(model_dir) -> Optional[tuple[T5Config, dict[str, Any]]]:
  if not (pathlib.Path(model_dir) / CONFIG_FILE).is_file():
    return None
  return load_model_config(model_dir)

_FRESH = "; use the settings it was trained with, or a fresh MODEL_DIR"


def check_same_method(model_dir, extra: dict[str, Any]) -> None:
  """Refuses to resume MODEL_DIR with another mode or method than its config.json
  records (`extra` is what this run would write there); before the checkpoint is read,
  whose shape errors would say less."""
  saved = _saved_run(model_dir)
  if saved is None:
    return
  saved = saved[1]
  if saved.get("mode", extra["mode"]) != extra["mode"]:
    raise CheckpointError(f"MODEL_DIR {model_dir} was trained with ModelSpec.mode "
                          f"{saved['mode']!r}, this run uses {extra['mode']!r}{_FRESH}")
  was, now = saved.get("method"), extra.get("method")
  if was and now and was.get("name") != now.get("name"):
    raise CheckpointError(f"MODEL_DIR {model_dir} was trained with the method "
                          f"{was.get('name')!r}, this run uses {now.get('name')!r}{_FRESH}")


def check_same_run(model_dir, config: T5Config, extra: dict[str, Any]) -> None:
  """Refuses to resume MODEL_DIR with other method settings or another base model (same
  shapes, other weights: the frozen fingerprint differs) than its config.json records;
  after the checkpoint's shapes were checked, and before config.json is rewritten."""
  saved = _saved_run(model_dir)
  if saved is None:
    return
  saved_config, saved = saved
  was, now = saved.get("method"), extra.get("method")
  old, new = (was or {}).get("settings") or {}, (now or {}).get("settings") or {}
  differ = [f"{k} {old.get(k)!r} vs {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]  # a field absent from one (None) is no difference
  if was and now and differ:
    raise CheckpointError(f"MODEL_DIR {model_dir} was trained with other {now.get('name')} "
                          f"settings (saved vs this run: {', '.join(differ)}){_FRESH}")
  differ = [f"{f} {getattr(saved_config, f)} vs {getattr(config, f)}"
            for f in methods_lib.base.ARCHITECTURE
            if getattr(saved_config, f) != getattr(config, f)]
  fingerprint = extra.get("frozen_fingerprint")
  if differ or saved.get("frozen_fingerprint", fingerprint) != fingerprint:
    detail = ", ".join(differ) if differ else "same shapes, other weights"
    raise CheckpointError(f"MODEL_DIR {model_dir} was trained on another base model "
                          f"({detail}): set INITIAL_CHECKPOINT_PATH to the model it was "
                          "trained on, or use a fresh MODEL_DIR")


def check_params_fit(saved: Any, wanted: Any, where: str) -> None:
  """Raises CheckpointError naming each parameter whose shape differs from the model's."""
  problems = _shape_problems(_leaf_shapes(saved), _leaf_shapes(wanted), "parameter")
  if problems:
    raise CheckpointError(f"{where} does not fit this model: " + "; ".join(problems)
                          + ". Use the settings it was trained with (e.g. PROMPT_LENGTH)")


def read_export(path, step: Optional[int] = None
                ) -> tuple[int, dict[str, np.ndarray], dict[str, Any]]:
  """`(step, arrays, sidecar)`: what the method of the run at `path` ships, from any
  checkpoint step, without the model. The method and model come from MODEL_DIR's
  config.json; a checkpoint without one is read as the method its tree belongs to."""
  step, params = read_params(path, step)
  export = _export_of_run(path, params)
  if export is None:
    raise CheckpointError(f"checkpoint step {step} under {path} holds no prompt nor any "
                          "tuning method's parameters (its parameters start with "
                          f"{_short(sorted(params))}): it is not a prompt- or prefix-tuning "
                          "checkpoint")
  arrays = export.arrays(params)
  if arrays is None:
    raise CheckpointError(f"{path} has no config.json, which {export.method.name} needs to "
                          "compute its export: pass the run's MODEL_DIR")
  sidecar = (export.method.sidecar(export.config, export.frozen_fingerprint, step)
             if export.config is not None else None)
  return step, arrays, sidecar


def _export_of_run(path, params: Any) -> Optional[Export]:
  directory, _ = locate(path)
  model_dir = directory.parent
  if (model_dir / CONFIG_FILE).is_file():
    config, extra = load_model_config(model_dir)
    if "method" in extra:
      return Export(methods_lib.from_description(extra["method"]), config,
                    extra.get("frozen_fingerprint"))
    method = methods_lib.detect(params)
    return None if method is None else Export(method.from_params(params), config,
                                              extra.get("frozen_fingerprint"))
  return default_export(params)
