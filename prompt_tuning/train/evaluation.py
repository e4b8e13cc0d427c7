"""Evaluation through `seqio.Evaluator`: decoding for text metrics, scoring for ranking.

seqio preprocesses the split once, calls our `predict_fn` (cached greedy decoding) for
metrics over predictions and our `score_fn` (target log-likelihood) for metrics over
scores, such as rank classification, then post-processes and computes the task's own
metric functions.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np
import seqio

from prompt_tuning.models import decoding
from prompt_tuning.models.network import T5

MODEL_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")


def _batches(dataset, batch_size: int):
  """Enumerated model features → padded numpy batches `(indices, features, real rows)`."""
  indices, rows = [], []
  for index, features in dataset.as_numpy_iterator():
    indices.append(index)
    rows.append({k: features[k] for k in MODEL_FEATURES})
    if len(rows) == batch_size:
      yield indices, {k: np.stack([r[k] for r in rows]) for k in MODEL_FEATURES}, batch_size
      indices, rows = [], []
  if rows:
    n = len(rows)
    rows += [{k: np.zeros_like(v) for k, v in rows[0].items()}] * (batch_size - n)
    yield indices, {k: np.stack([r[k] for r in rows]) for k in MODEL_FEATURES}, n


class Evaluator:
  """Runs a task's metrics on a split with the current parameters.

  `place_batch` puts a numpy batch on the mesh; `context` is the mesh and logical-axis
  rules under which the jitted functions trace.
  """

  def __init__(self, model: T5, task_name: str, split: str,
               feature_lengths: Mapping[str, int], batch_size: int,
               place_batch: Callable[[dict], dict], context: Callable[[], Any],
               num_examples: Optional[int] = None):
    self.model = model
    self.batch_size = batch_size
    self.max_decode_length = feature_lengths["targets"]
    self._place = place_batch
    self._context = context
    self._evaluator = seqio.Evaluator(
        mixture_or_task_name=task_name,
        feature_converter=seqio.EncDecFeatureConverter(pack=False),
        eval_split=split, sequence_length=dict(feature_lengths), num_examples=num_examples,
        use_memory_cache=True, async_compute_metrics=False)
    self._score = jax.jit(lambda params, batch: model.apply(
        {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
        batch["decoder_target_tokens"], method=T5.target_log_likelihood))

  def evaluate(self, params: Any, step: Optional[int] = None) -> dict[str, float]:
    """`{"task/metric": value}` over the split, for the given full parameter tree."""
    def predict_fn(dataset, model_feature_shapes=None):
      del model_feature_shapes
      out = []
      for indices, batch, n in _batches(dataset, self.batch_size):
        with self._context():
          tokens, _ = decoding.generate(self.model, params,
                                        self._place(batch)["encoder_input_tokens"],
                                        max_decode_length=self.max_decode_length)
        tokens = np.asarray(jax.device_get(tokens))[:n]
        out.extend((i, t.tolist()) for i, t in zip(indices, tokens))
      return out

    def score_fn(dataset, model_feature_shapes=None):
      del model_feature_shapes
      out = []
      for indices, batch, n in _batches(dataset, self.batch_size):
        with self._context():
          scores = self._score(params, self._place(batch))
        out.extend(zip(indices, np.asarray(jax.device_get(scores))[:n].tolist()))
      return out

    future, _ = self._evaluator.evaluate(compute_metrics=True, step=step,
                                         predict_fn=predict_fn, score_fn=score_fn)
    results = {}
    for task, metrics in future.result().items():
      for name, value in metrics.items():
        value = getattr(value, "value", value)
        if np.ndim(value) == 0 and np.issubdtype(np.asarray(value).dtype, np.number):
          results[f"{task}/{name}"] = float(value)
        else:
          logging.info("skipping non-scalar metric %s/%s", task, name)
    return results


def rank_classification_name(task_name: str) -> Optional[str]:
  """The rank-classification twin of a task, if one is registered."""
  from prompt_tuning.data.tasks import RANK_SUFFIX
  name = task_name + RANK_SUFFIX
  return name if name in seqio.TaskRegistry.names() else None

