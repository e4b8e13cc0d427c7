"""Training metrics to `metrics.jsonl`, TensorBoard event files and the terminal."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Mapping, Optional

import tqdm

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
  """Writes each step's scalars to `<model_dir>/metrics.jsonl` and TensorBoard.

  On a terminal a progress bar with ETA; otherwise, every `progress_period` steps, one
  line `step 100/300  loss 0.381  41.2 examples/s  ETA 0:00:48` (the loss is the mean
  of the steps logged since the last line, the rate excludes the first step's
  compilation), and `summary()` for the end. At `verbosity` 1 (default: the command
  line's, `prompt_tuning.logs`) also one line per logged step with every scalar.
  Only process 0 writes.
  """

  def __init__(self, model_dir: str, total_steps: int, start_step: int = 0,
               is_writer: Optional[bool] = None, batch_size: Optional[int] = None,
               progress_period: Optional[int] = None, verbosity: Optional[int] = None):
    import jax
    from prompt_tuning import logs
    self.is_writer = jax.process_index() == 0 if is_writer is None else is_writer
    self.verbosity = logs.verbosity() if verbosity is None else verbosity
    self._total, self._first = total_steps, start_step
    self._batch_size, self._period = batch_size, progress_period
    self._losses, self._final_loss = [], None
    self._clock = None  # (step, time) the examples/s and ETA count from
    self._started = time.time()
    self._jsonl = None
    self._tb = None
    self._bar = None
    if not self.is_writer:
      return
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, METRICS_FILE)
    self._jsonl = open(path, "a", encoding="utf-8")
    if self._jsonl.tell() and not _ends_with_newline(path):
      self._jsonl.write("\n")  # a kill tore the last line: keep it off the next record's
    import tensorflow as tf  # only its event-file writer; view with `tensorboard --logdir`
    self._tf = tf
    self._tb = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard"))
    if sys.stderr.isatty():
      self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step",
                            dynamic_ncols=True)
    self._start = time.time()

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.is_writer:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self._jsonl.flush()
    with self._tb.as_default():
      for name, value in scalars.items():
        self._tf.summary.scalar(name, value, step=step)
    self._tb.flush()
    if self._bar is not None:
      shown = {k.split("/")[-1]: f"{v:.4g}" for k, v in scalars.items()
               if k.endswith(("loss", "accuracy"))}
      self._bar.set_postfix(shown)
    elif self.verbosity >= 1:
      text = " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
      print(f"step {step}: {text}", flush=True)
    if "train/loss" in scalars:
      self._losses.append(scalars["train/loss"])
      if self._clock is None:
        self._clock = (step, time.time())
      if self._bar is None and self._period and (step % self._period == 0
                                                 or step == self._total):
        print(self._progress_line(step), flush=True)

  def _progress_line(self, step: int) -> str:
    self._final_loss = sum(self._losses) / len(self._losses)
    self._losses = []
    line = f"step {step}/{self._total}  loss {self._final_loss:.4g}"
    first, since = self._clock
    if step > first:
      per_step = (time.time() - since) / (step - first)
      if self._batch_size:
        line += f"  {self._batch_size / per_step:.1f} examples/s"
      line += f"  ETA {_clock(per_step * (self._total - step))}"
    return line

  def summary(self, step: int, exported: Optional[str] = None) -> str:
    """One line for the end of a run: steps, final loss, wall time, the export's path."""
    line = f"trained steps {self._first}-{step} in {_clock(time.time() - self._started)}"
    if self._losses:  # logged after the last progress line, or on a terminal
      self._final_loss = sum(self._losses) / len(self._losses)
    if self._final_loss is not None:
      line += f", final loss {self._final_loss:.4g}"
    if exported:
      line += f"; prompt written to {exported}"
    return line

  def progress(self, step: int) -> None:
    if self._bar is not None:
      self._bar.n = step
      self._bar.refresh()

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def _clock(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _ends_with_newline(path: str) -> bool:
  with open(path, "rb") as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"


def read_metrics(model_dir: str) -> list[dict]:
  """Every record of `<model_dir>/metrics.jsonl`, in the order written.

  A resumed run appends, so a step can appear twice (the later record is the resumed
  run's). A line torn by a kill is skipped: the logger starts a fresh line when it
  reopens the file, so a torn line never swallows the next record.
  """
  path = os.path.join(model_dir, METRICS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} does not exist: is {model_dir} a training run's MODEL_DIR?")
  records = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if isinstance(record, dict) and "step" in record:
        records.append(record)
  return records
