"""Metric functions against hand-computed values."""
import pytest

from prompt_tuning.data import metrics


def test_accuracy():
  assert metrics.accuracy(["a", "b", "a", "c"], ["a", "a", "a", "c"]) == {"accuracy": 0.75}
  with pytest.raises(ValueError, match="3 targets but 2 predictions"):
    metrics.accuracy(["a", "b", "c"], ["a", "b"])


def test_macro_f1_by_hand():
  targets = ["a", "a", "a", "b", "b", "c"]
  predictions = ["a", "a", "b", "b", "c", "c"]
  # a: tp 2 fp 0 fn 1 -> 0.8; b: tp 1 fp 1 fn 1 -> 0.5; c: tp 1 fp 1 fn 0 -> 2/3.
  expected = (0.8 + 0.5 + 2 / 3) / 3
  assert metrics.macro_f1(targets, predictions)["macro_f1"] == pytest.approx(expected)
  # A prediction outside the classes is a class with F1 0: a 1.0, b 0.0, junk 0.0.
  assert metrics.macro_f1(["a", "b"], ["a", "junk"])["macro_f1"] == pytest.approx(1 / 3)


def test_rank_classification_groups_scores_by_idx():
  rows = [  # (idx, candidate, is_correct), score
      ((0, 0, False), -3.0), ((0, 1, True), -1.0), ((0, 2, False), -2.0),
      ((1, 0, True), -5.0), ((1, 1, False), -0.5), ((1, 2, False), -4.0),
      ((2, 0, False), -9.0), ((2, 1, False), -8.0), ((2, 2, True), -0.1),
  ]
  targets, scores = zip(*rows)
  result = metrics.rank_classification(list(targets), list(scores), num_classes=3)
  # Predicted 1, 1, 2 against gold 1, 0, 2.
  assert result["accuracy"] == pytest.approx(2 / 3)
  assert result["macro_f1"] == pytest.approx(metrics.macro_f1([1, 0, 2], [1, 1, 2])["macro_f1"])
  assert "macro_f1" not in metrics.rank_classification(list(targets)[:6], list(scores)[:6])
  named = metrics.rank_classification(list(targets), list(scores), 3, labels=["a", "b", "c"])
  assert named["predicted/a"] == 0.0
  assert named["predicted/b"] == pytest.approx(2 / 3)
  assert named["predicted/c"] == pytest.approx(1 / 3)
  assert "predicted/a" not in result
  with pytest.raises(ValueError, match="no correct candidate"):
    metrics.rank_classification([(0, 0, False), (0, 1, False)], [0.0, 1.0])


def test_rank_classification_target_postprocessor():
  example = {"idx": 4, "candidate": 1, "is_correct": True}
  assert metrics.rank_classification_target("yes", example, is_target=True) == (4, 1, True)
  assert metrics.rank_classification_target("yes", example) == "yes"
