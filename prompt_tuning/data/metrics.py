"""Metric functions in seqio's form: lists in, a dict of fractions in [0, 1] out."""
from typing import Any, Mapping, Optional, Sequence

import numpy as np


def accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  """{"accuracy": the fraction of predictions equal to their target}."""
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions.")
  hits = [t == p for t, p in zip(targets, predictions)]
  return {"accuracy": float(np.mean(hits)) if hits else 0.0}


def macro_f1(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  """{"macro_f1": F1 averaged over every class seen in targets or predictions}.

  A prediction outside the target classes counts as a class of its own with F1
  0, as scikit-learn's `f1_score(average="macro")` does.
  """
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions.")
  targets, predictions = list(targets), list(predictions)
  scores = []
  for c in set(targets) | set(predictions):
    tp = sum(t == c and p == c for t, p in zip(targets, predictions))
    wrong = sum((t == c) != (p == c) for t, p in zip(targets, predictions))
    scores.append(2 * tp / (2 * tp + wrong))
  return {"macro_f1": float(np.mean(scores)) if scores else 0.0}


def rank_classification_target(target: str,
                               example: Optional[Mapping[str, Any]] = None,
                               is_target: bool = False):
  """seqio postprocess_fn: a scored target becomes (idx, candidate, is_correct)."""
  if not is_target:
    return target
  return (int(example["idx"]), int(example["candidate"]), bool(example["is_correct"]))


def rank_classification(targets: Sequence[tuple[int, int, bool]],
                        scores: Sequence[float],
                        num_classes: int = 2,
                        labels: Optional[Sequence[str]] = None) -> dict[str, float]:
  """Accuracy (and macro-F1 if `num_classes` > 2) of the best-scored candidate per idx.

  `targets` are `rank_classification_target` tuples, one per scored candidate. With
  `labels` (the candidates' names, in index order) also `predicted/<label>`: the
  share of examples given each label, which shows a model stuck on a class prior.
  """
  if len(targets) != len(scores):
    raise ValueError(f"{len(targets)} targets but {len(scores)} scores.")
  best, gold = {}, {}
  for (idx, candidate, is_correct), score in zip(targets, scores):
    if idx not in best or score > best[idx][0]:
      best[idx] = (score, candidate)
    if is_correct:
      gold[idx] = candidate
  missing = sorted(set(best) - set(gold))
  if missing:
    raise ValueError(f"Examples {missing[:5]} have no correct candidate; every "
                     "idx needs one target with is_correct=True.")
  order = sorted(best)
  truth = [gold[i] for i in order]
  predicted = [best[i][1] for i in order]
  result = accuracy(truth, predicted)
  if num_classes > 2:
    result.update(macro_f1(truth, predicted))
  if labels is not None:
    for index, label in enumerate(labels):
      result[f"predicted/{label}"] = float(np.mean([p == index for p in predicted]))
  return result
