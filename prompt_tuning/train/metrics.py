"""Training metrics to `metrics.jsonl`, TensorBoard event files and the terminal."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Mapping, Optional

import tqdm


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
    self._jsonl = open(os.path.join(model_dir, "metrics.jsonl"), "a", encoding="utf-8")
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
