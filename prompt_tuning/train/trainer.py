"""The train loop, one readable function, and the set-up it shares with eval and infer.

    python -m prompt_tuning.train --gin_file=configs/quickstart.gin \
        --gin.MODEL_DIR="'/tmp/run'"

Resumable bit for bit: the data pipeline is deterministic given the seed and restarts
at the checkpoint's batch position, dropout keys derive from (seed, step), and the
checkpoint holds the exact trainable parameters and optimiser state.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import gin
import jax
import optax
import seqio

from prompt_tuning import methods
from prompt_tuning.io import exports
from prompt_tuning.models import T5Config, get_config, load_pretrained
from prompt_tuning.models.network import T5
from prompt_tuning.prompts.initializers import PromptInit
from prompt_tuning.train import checkpoints, optimizers, partitioning
from prompt_tuning.train import step as step_lib
from prompt_tuning.train.metrics import MetricsLogger
from prompt_tuning.train.state import EVERYTHING, unbox

TaskLike = Union[str, seqio.Task, seqio.Mixture]


class TrainingError(RuntimeError):
  """A run that must stop: a non-finite loss, a checkpoint that does not fit."""


class Stopped(KeyboardInterrupt):
  """SIGINT or SIGTERM stopped the run after saving a checkpoint; exit 128 + `signum`."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


def _positive_int(name: str, value: Any, allow_none: bool = False, minimum: int = 1) -> None:
  if allow_none and value is None:
    return
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    raise ValueError(f"{name} must be {what}{' or None' if allow_none else ''}, got "
                     f"{value!r} ({type(value).__name__}); bind a number without quotes, "
                     f"e.g. --gin.{name}=8")


def check_model_dir(model_dir: Any) -> None:
  """MODEL_DIR must be a folder, or a path whose nearest existing parent we may write."""
  if not isinstance(model_dir, (str, os.PathLike)) or not str(model_dir):
    raise ValueError(f"MODEL_DIR must be a path, got {model_dir!r}")
  path = os.path.abspath(os.path.expanduser(model_dir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"MODEL_DIR {path} is a file, not a folder; point MODEL_DIR at a "
                     "folder (new or a run's)")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f"MODEL_DIR {path} cannot be created: {existing} is a file, not a "
                     "folder; point MODEL_DIR elsewhere")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f"MODEL_DIR {path} is not writable (no permission to write in "
                     f"{existing}); point MODEL_DIR at a folder you can write")


def _check_loss(loss: Any, step: int, last_saved: Optional[int], model_dir: str,
                what: Optional[str] = None) -> None:
  value = float(loss)
  if not math.isfinite(value):
    good = (f"the last good checkpoint is step {last_saved} in {model_dir}" if last_saved
            else f"there is no checkpoint in {model_dir} yet")
    raise TrainingError(f"{what or f'loss is {value} at'} step {step}; stopped, {good}; "
                        "lower the learning rate or check the data")


def _truncation_warner(batches, lengths: Mapping[str, int]):
  """Yields `batches`, saying once (on stderr) when an example fills its whole feature
  length: seqio cuts longer ones there (keeping their EOS), so they lose their end.
  Packed rows are not checked."""
  keys = {"encoder_input_tokens": "inputs", "decoder_target_tokens": "targets"}
  warned = False
  for batch in batches:
    if not warned and "encoder_segment_ids" not in batch:
      full = [f"{f} {lengths[f]}" for key, f in keys.items()
              if key in batch and f in lengths and (batch[key][:, -1] != 0).any()]
      if full:
        print(f"warning: some examples reach TASK_FEATURE_LENGTHS ({', '.join(full)} tokens) "
              "and longer ones are truncated to it; raise TASK_FEATURE_LENGTHS to keep them "
              "whole (said once)", file=sys.stderr, flush=True)
        warned = True
    yield batch


class _SignalStop:
  """While training, SIGINT and SIGTERM ask the loop to stop at the next step (`signum`
  is the signal's number); a second one stops at once, as Python's default would."""

  def __init__(self):
    self.signum = None
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._handle)

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      self.restore()
      raise Stopped(f"stopped by a second {signal.Signals(signum).name} before a checkpoint "
                    "was saved; rerun the same command to continue from the last one", signum)
    self.signum = signum

  def restore(self):
    for signum, old in self._previous.items():
      signal.signal(signum, old)
    self._previous = {}


def _check_params(params: Any, step: int, last_saved: Optional[int], model_dir: str) -> None:
  """A state about to be saved must be finite (a finite loss can precede an inf update)."""
  jnp = jax.numpy
  floats = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
  if floats and not bool(jnp.all(jnp.stack([jnp.isfinite(x).all() for x in floats]))):
    _check_loss(math.nan, step, last_saved, model_dir, "the parameters are not finite after")


def task_name(mixture_or_task: TaskLike, spec: Optional["ModelSpec"] = None) -> str:
  """The task's name; with `spec`, that of the task its method reads (`Method.task`)."""
  if isinstance(mixture_or_task, (seqio.Task, seqio.Mixture)):
    name = mixture_or_task.name
  else:
    import prompt_tuning.data  # noqa: F401  (registers the tasks)
    name = mixture_or_task
  method = spec.tuning_method if spec is not None else None
  return name if method is None else method.task(name)


def task_vocab_size(name: str) -> int:
  """The number of ids (sentinels included) of a task's target vocabulary."""
  from prompt_tuning.data.pipeline import _provider
  return _provider(name).output_features["targets"].vocabulary.vocab_size


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What to train: the base model, and either a tuning method's parameters or the whole
  model.

  `initial_checkpoint_path` names a Hugging Face, T5X or our own checkpoint; without
  one the model starts from random weights of `preset` (pretraining from scratch).
  With `mode='prompt'` the `method` trains (`ModelSpec.method = @PrefixTuning()`); by
  default it is prompt tuning with the `prompt_*` fields.
  """
  initial_checkpoint_path: Optional[str] = None
  preset: Optional[str] = None
  mode: str = "prompt"  # "prompt": train the method's parameters alone; "full": every weight
  method: Optional[methods.Method] = None
  prompt_length: int = 100
  prompt_init: Optional[PromptInit] = None
  prompt_placement: str = "prefix"
  dropout_rate: Optional[float] = None  # None keeps the checkpoint's
  dtype: Optional[str] = None

  def __post_init__(self):
    if self.mode not in ("prompt", "full"):
      raise ValueError(f"ModelSpec.mode must be 'prompt' or 'full', got {self.mode!r}")
    if self.mode == "prompt" and not self.initial_checkpoint_path:
      raise ValueError("prompt tuning needs a pretrained model: set INITIAL_CHECKPOINT_PATH")
    if not self.initial_checkpoint_path and not self.preset:
      raise ValueError("set INITIAL_CHECKPOINT_PATH, or a model preset to start from scratch")
    if self.mode == "prompt" and self.method is None:
      _positive_int("PROMPT_LENGTH", self.prompt_length)

  @property
  def tuning_method(self) -> Optional[methods.Method]:
    """The method that trains (None: the whole model trains)."""
    if self.mode == "full":
      return None
    return self.method or methods.PromptTuning(self.prompt_length, self.prompt_init,
                                               self.prompt_placement)

  @property
  def trainable(self) -> Sequence[str]:
    method = self.tuning_method
    return EVERYTHING if method is None else method.trainable


# The fields that fix a checkpoint's parameter shapes and computation (not its vocabulary
# size, dropout, dtype or remat, which a run may choose).
_ARCHITECTURE = ("emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
                 "num_decoder_layers", "mlp_activations", "logits_via_embedding",
                 "relative_attention_num_buckets", "relative_attention_max_distance")


def _check_preset_matches(preset: str, config: T5Config, path: str) -> None:
  """A preset named beside a checkpoint must describe it; the checkpoint's config is used."""
  wanted = get_config(preset)
  differ = [f"{f} {getattr(wanted, f)} vs {getattr(config, f)}" for f in _ARCHITECTURE
            if getattr(wanted, f) != getattr(config, f)]
  if differ:
    raise ValueError(f"ModelSpec.preset {preset!r} does not describe the checkpoint {path} "
                     f"(preset vs checkpoint: {', '.join(differ)}); drop the gin/models/ "
                     "preset fragment, the checkpoint's own config.json is used")


def load_base_model(spec: ModelSpec, seed: int = 0, vocab_size: Optional[int] = None,
                    init_params: bool = True) -> tuple[T5Config, Any]:
  """The base model's config and host parameters, from a checkpoint or a random init.

  `vocab_size` is the task vocabulary's: a model from scratch gets that many embedding
  rows (rounded up to a multiple of 128), a checkpoint must have at least that many.
  With `init_params=False` a model from scratch is not initialised (params are None).
  """
  if spec.initial_checkpoint_path:
    path = os.path.expanduser(spec.initial_checkpoint_path)
    if not os.path.exists(path):
      raise FileNotFoundError(f"INITIAL_CHECKPOINT_PATH {path} does not exist")
    config, params = load_pretrained(path)
    if spec.preset:
      _check_preset_matches(spec.preset, config, path)
    if vocab_size is not None and vocab_size > config.vocab_size:
      raise ValueError(f"the task's vocabulary has {vocab_size} ids but the model's embedding "
                       f"has {config.vocab_size} rows; use the vocabulary the model was "
                       "trained with (PROMPT_TUNING_VOCAB or the task's output features)")
  else:
    config = get_config(spec.preset)
    if vocab_size is not None:
      config = config.replace(vocab_size=-(-vocab_size // 128) * 128)
    params = None
  overrides = {k: v for k, v in (("dropout_rate", spec.dropout_rate), ("dtype", spec.dtype))
               if v is not None}
  config = config.replace(**overrides)
  if params is None and init_params:
    params = random_params(config, seed)
  return config, params


def random_params(config: T5Config, seed: int) -> Any:
  """A random initialisation of the whole model, on the host."""
  return jax.device_get(unbox(jax.jit(T5(config).init_params)(jax.random.PRNGKey(seed))))


def build_model(config: T5Config, spec: ModelSpec) -> T5:
  method = spec.tuning_method
  return T5(config) if method is None else method.build_model(config)


@dataclasses.dataclass
class Run:
  """Everything a loop needs, placed on the mesh."""
  config: T5Config
  model: T5
  program: step_lib.TrainProgram
  state: Any
  frozen: Any
  checkpointer: checkpoints.Checkpointer
  data_position: int


def set_up(model_dir: str, spec: ModelSpec, optimizer: optax.GradientTransformation,
           mesh_shape: Sequence[int], batch_size: int, input_length: int,
           loss_config: step_lib.LossConfig, learning_rate: Optional[Callable] = None,
           seed: int = 0, keep_checkpoints: int = 3, restore_step: Optional[int] = None,
           max_encoder_length: Optional[int] = None, restore: bool = True,
           for_training: bool = True, vocab_size: Optional[int] = None,
           export_file: Optional[str] = None) -> Run:
  """Loads the base model, builds the step and restores a checkpoint (the latest by default).

  With `restore=False` the trainable part keeps its initialisation, or is read from
  `export_file` (a method's export: PROMPT_FILE), and nothing is read from or written
  to `model_dir`. With
  `for_training=False` (eval, infer) only the trainable parameters are read back, so the
  optimiser a run was trained with does not matter.
  """
  # Everything that can refuse the configuration runs before the checkpoint folder is
  # opened. The starting weights come after: a whole model resuming from its checkpoint
  # needs none, and initialising, placing and giving them an optimiser state would only
  # hold a second copy of the state while the checkpoint is read.
  config, base_params = load_base_model(spec, seed, vocab_size, init_params=False)
  mesh = partitioning.make_mesh(mesh_shape)
  partitioning.check_batch_size(batch_size, mesh)
  method = spec.tuning_method
  if method is not None:
    method.check_lengths(input_length, max_encoder_length)
  fingerprint = None if method is None else exports.fingerprint(base_params)
  loaded = None
  if export_file:
    if method is None:
      raise ValueError("a whole-model run (mode 'full') reads no method export file; unset "
                       "PROMPT_FILE")
    arrays, sidecar = exports.load_export(export_file)
    method.check_sidecar(sidecar, config, fingerprint, str(export_file))
    model, loaded = method.load(arrays, config, str(export_file))
  else:
    model = build_model(config, spec)
  program = step_lib.build(model, optimizer, mesh, step_lib.abstract_params(model),
                           spec.trainable, loss_config, learning_rate, seed)
  checkpointer, resume_step = None, None
  if restore and for_training:
    export = None if method is None else checkpoints.Export(method, config, fingerprint)
    checkpointer = checkpoints.Checkpointer(model_dir, keep=keep_checkpoints, export=export)
    resume_step = restore_step if restore_step is not None else checkpointer.latest_step()
  try:
    if spec.mode == "full" and resume_step is not None:
      del base_params  # a checkpoint's weights, read for its config: free them first
      state, frozen = None, {}
    else:
      if base_params is None:
        base_params = random_params(config, seed)
      if loaded is not None:
        state, frozen = program.init_state(loaded, base_params)
      elif method is not None:
        key = jax.random.PRNGKey(seed + 1)
        state, frozen = program.init_state(
            unbox(method.init_params(model, base_params, key)), base_params)
      else:
        state, frozen = program.init_state(base_params, {})
    position = 0
    if checkpointer is not None:
      extra = {"mode": spec.mode}
      if method is not None:
        extra.update(method=method.describe(), frozen_fingerprint=fingerprint)
      if resume_step is not None:  # config.json is rewritten once the checkpoint fits
        checkpoints.check_same_method(model_dir, extra)
        state, position = checkpointer.restore(checkpoints.abstract_state(program), resume_step)
        checkpoints.check_same_run(model_dir, config, extra)
        logging.info("restored step %d from %s", int(state.step), model_dir)
      checkpoints.save_model_config(model_dir, config, extra)
    elif restore:
      step, params = checkpoints.read_params(model_dir, restore_step)
      checkpoints.check_params_fit(params, state.params, f"{model_dir} step {step}")
      state = state.replace(step=jax.numpy.asarray(step, jax.numpy.int32),
                            params=partitioning.place(params, program.state_shardings.params))
  except BaseException:
    if checkpointer is not None:
      checkpointer.close()
    raise
  return Run(config, model, program, state, frozen, checkpointer, position)


def make_evaluators(run: Run, name: str, split: str, lengths: Mapping[str, int],
                    batch_size: int, num_examples: Optional[int]):
  """The task's evaluator and, for a classification task, its rank-classification twin's."""
  from prompt_tuning.train import evaluation
  names = [name] + [n for n in [evaluation.rank_classification_name(name)] if n]
  return [evaluation.Evaluator(run.model, n, split, lengths, batch_size,
                               run.program.place_batch, run.program.context, num_examples)
          for n in names]


def evaluate_all(run: Run, evaluators, step: int, logger: Optional[MetricsLogger] = None):
  params = step_lib.merge_params(run.frozen, run.state.params)
  results = {}
  for evaluator in evaluators:
    results.update(evaluator.evaluate(params, step))
  for key, value in sorted(results.items()):
    print(f"{key}: {value:.4f}", flush=True)
  if logger:
    logger.write(step, {f"eval/{k}": v for k, v in results.items()})
  return results


@gin.configurable
def train(model_dir: str = gin.REQUIRED, mixture_or_task_name: TaskLike = gin.REQUIRED,
          task_feature_lengths: Mapping[str, int] = gin.REQUIRED, batch_size: int = 32,
          train_steps: int = gin.REQUIRED, checkpoint_period: int = 100,
          eval_period: Optional[int] = 100, eval_split: str = "validation",
          eval_examples: Optional[int] = None, model: ModelSpec = gin.REQUIRED,
          optimizer: Optional[optax.GradientTransformation] = None,
          learning_rate: Optional[Callable] = None,
          loss_config: step_lib.LossConfig = step_lib.LossConfig(),
          mesh_shape: Sequence[int] = (-1, 1), seed: int = 0, pack: bool = False,
          keep_checkpoints: int = 3, log_period: int = 10,
          max_encoder_length: Optional[int] = None,
          save_data_iterator: bool = False) -> dict[str, float]:
  """Trains until the absolute step `train_steps`, resuming from `model_dir` if it can.

  A resumed run reads on from the checkpoint's data position: it restores the input
  pipeline's iterator when the checkpoint holds one (`save_data_iterator=True` saves it,
  megabytes per checkpoint), and otherwise re-reads the stream up to that position
  (the same batches, but slow after many steps). Returns the last evaluation's metrics
  (empty when evaluation is off).
  """
  check_model_dir(model_dir)
  for key, value in (("BATCH_SIZE", batch_size), ("TRAIN_STEPS", train_steps),
                     ("CHECKPOINT_PERIOD", checkpoint_period), ("train.log_period", log_period)):
    _positive_int(key, value)
  _positive_int("EVAL_PERIOD", eval_period, allow_none=True, minimum=0)
  if not isinstance(task_feature_lengths, Mapping):
    raise ValueError(f"TASK_FEATURE_LENGTHS must be a dict like {{'inputs': 256, 'targets': 16}}, "
                     f"got {task_feature_lengths!r}")
  for key, value in task_feature_lengths.items():
    _positive_int(f"TASK_FEATURE_LENGTHS['{key}']", value)
  name = task_name(mixture_or_task_name, model)
  from prompt_tuning.data import get_dataset
  optimizer = optimizer or optimizers.adafactor()
  run = set_up(model_dir, model, optimizer, mesh_shape, batch_size,
               task_feature_lengths["inputs"], loss_config, learning_rate, seed,
               keep_checkpoints, max_encoder_length=max_encoder_length,
               vocab_size=task_vocab_size(name))
  start = int(run.state.step)
  write_gin_config(model_dir, "config.gin")
  logger = MetricsLogger(model_dir, total_steps=train_steps, start_step=start,
                         batch_size=batch_size, progress_period=checkpoint_period)
  evaluators = (make_evaluators(run, name, eval_split, task_feature_lengths, batch_size,
                                 eval_examples) if eval_period else [])
  if start >= train_steps:
    print(f"{model_dir} is already at step {start} >= TRAIN_STEPS={train_steps}; "
          "raise TRAIN_STEPS to continue", flush=True)
    results = evaluate_all(run, evaluators, start, logger) if evaluators else {}
    run.checkpointer.close()
    return results

  shard = seqio.ShardInfo(jax.process_index(), jax.process_count())
  # A saved iterator restores into the pipeline built at batch 0; without one, skip.
  from_iterator = bool(start) and run.checkpointer.has_data_iterator(start)
  iterator = iter(get_dataset(
      name, "train", task_feature_lengths, batch_size // jax.process_count(), shuffle=True,
      seed=seed, pack=pack, shard_info=shard,
      start_batch=0 if from_iterator else run.data_position))
  if from_iterator:
    if not run.checkpointer.restore_data_iterator(iterator, start):
      raise checkpoints.CheckpointError(f"checkpoint {start}'s data iterator vanished while "
                                        "resuming; rerun to skip to the data position")
    print(f"resuming the data stream at batch {run.data_position} from checkpoint "
          f"{start}'s data iterator", flush=True)
  elif run.data_position:
    print(f"re-reading the data stream up to batch {run.data_position} (checkpoint "
          f"{start} has no data iterator; train.save_data_iterator=True saves one)",
          flush=True)
  batches = _truncation_warner(({k: v.numpy() for k, v in batch.items()} for batch in iterator),
                               task_feature_lengths)
  tokens_per_batch = batch_size * (task_feature_lengths["inputs"]
                                   + task_feature_lengths["targets"])
  state, position, results = run.state, run.data_position, {}
  last_saved = start
  unchecked = None  # (step, loss) of the step before, read once the next one is queued
  tick, tick_step = time.time(), start
  stop = _SignalStop()
  try:
    for step in range(start, train_steps):
      batch = step_lib.model_features(next(batches))
      new_state, metrics = run.program.train_step(state, run.frozen,
                                                  run.program.place_batch(batch))
      if unchecked is not None:
        _check_loss(unchecked[1], unchecked[0], last_saved, model_dir)
      position += 1
      done = step + 1
      unchecked = (done, metrics["loss"])
      save = done % checkpoint_period == 0 or done == train_steps
      if save or stop.signum is not None:
        _check_loss(metrics["loss"], done, last_saved, model_dir)
      if save or done % log_period == 0 or done == start + 1:
        metrics = jax.device_get(metrics)
        _check_loss(metrics["loss"], done, last_saved, model_dir)
        elapsed = max(time.time() - tick, 1e-9)
        metrics["steps_per_sec"] = (done - tick_step) / elapsed
        metrics["tokens_per_sec"] = metrics["steps_per_sec"] * tokens_per_batch
        tick, tick_step = time.time(), done
        logger.write(done, {f"train/{k}": float(v) for k, v in metrics.items()})
      state = new_state
      logger.progress(done)
      if save or stop.signum is not None:  # its loss was checked above: never save NaN
        _check_params(state.params, done, last_saved, model_dir)
        run.checkpointer.save(done, state, position,
                              data_iterator=iterator if save_data_iterator else None)
        last_saved = done
      if stop.signum is not None:
        run.checkpointer.wait_until_finished()
        raise Stopped(f"stopped by {signal.Signals(stop.signum).name} at step {done}; saved "
                      f"checkpoint {done} in {model_dir}; rerun the same command to continue",
                      stop.signum)
      if evaluators and (done % eval_period == 0 or done == train_steps):
        run.state = state
        results = evaluate_all(run, evaluators, done, logger)
  finally:
    stop.restore()
    logger.close()
    run.checkpointer.close()  # waits for the last async save; raises if it failed
  write_gin_config(model_dir, "operative_config.gin", operative=True)
  print(logger.summary(train_steps, run.checkpointer.last_export), flush=True)
  return results


def write_gin_config(model_dir: str, name: str, operative: bool = False) -> None:
  """The gin configuration of this run, next to its checkpoints (process 0 only)."""
  if jax.process_index() != 0:
    return
  text = gin.operative_config_str() if operative else gin.config_str()
  from prompt_tuning.io.files import atomic_file
  with atomic_file(os.path.join(model_dir, name)) as f:
    f.write(text.encode("utf-8"))
