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

  On a terminal a progress bar with ETA; otherwise one plain line per logged step.
  Only process 0 writes.
  """

  def __init__(self, model_dir: str, total_steps: int, start_step: int = 0,
               is_writer: Optional[bool] = None):
    import jax
    self.is_writer = jax.process_index() == 0 if is_writer is None else is_writer
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
    else:
      text = " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
      print(f"step {step}: {text}", flush=True)

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
