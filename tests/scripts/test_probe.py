"""scripts/probe.py: the regression is at its optimum (checked with torch autograd), the
encoder features are transformers' mean-pooled encoder states, and the CLI end to end."""
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from repo_paths import REPO_ROOT
from prompt_tuning.scripts.make_random_model import write_random_model

_spec = importlib.util.spec_from_file_location("probe_script", REPO_ROOT / "scripts" / "probe.py")
probe = importlib.util.module_from_spec(_spec)
sys.modules["probe_script"] = probe
_spec.loader.exec_module(probe)


def _torch_objective(z, w, b, y, l2):
  """The regularised mean cross-entropy, written again in torch."""
  w = torch.tensor(w, requires_grad=True)
  b = torch.tensor(b, requires_grad=True)
  logits = torch.tensor(z) @ w + b
  loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y)) + 0.5 * l2 * (w ** 2).sum()
  loss.backward()
  return w.grad.numpy(), b.grad.numpy()


@pytest.mark.parametrize("num_classes", [2, 4])
def test_the_regression_reaches_the_optimum_of_its_objective(num_classes):
  rng = np.random.RandomState(num_classes)
  centres = rng.normal(size=(num_classes, 6)) * 3.0
  y = rng.randint(num_classes, size=300)
  x = centres[y] + rng.normal(size=(300, 6)) + 10.0  # an offset standardisation removes
  predict, fitted = probe.fit_softmax_regression(x, y, num_classes, l2=0.01)
  grad_w, grad_b = _torch_objective(fitted["z"], fitted["w"], fitted["b"], y, 0.01)
  assert np.abs(grad_w).max() < 1e-5 and np.abs(grad_b).max() < 1e-5
  # Well separated clusters: the probe finds them; shuffled labels: it cannot.
  assert np.mean(predict(x) == y) > 0.9
  test_y = rng.randint(num_classes, size=300)
  test_x = centres[test_y] + rng.normal(size=(300, 6)) + 10.0
  assert np.mean(predict(test_x) == test_y) > 0.85
  shuffled = rng.permutation(y)
  predict, _ = probe.fit_softmax_regression(x, shuffled, num_classes, l2=0.01)
  assert np.mean(predict(test_x) == test_y) < 0.5 + 0.5 / num_classes


def test_bag_of_pieces_counts_tokens_and_ignores_padding():
  counts = probe.bag_of_pieces([np.array([3, 3, 5, 1]), np.array([2, 0, 0])], 6)
  np.testing.assert_array_equal(counts, [[0, 1, 0, 2, 0, 1], [0, 0, 1, 0, 0, 0]])


def test_encoder_features_match_transformers(tmp_path):
  from transformers import T5EncoderModel

  from prompt_tuning.models import load_pretrained
  path = write_random_model(str(tmp_path / "model"), "tiny", seed=3)
  config, params = load_pretrained(path)
  rng = np.random.RandomState(0)
  inputs = [rng.randint(2, config.vocab_size, size=n) for n in (5, 9, 3)]
  ours = probe.encoder_features(config, params, inputs, batch_size=2)
  hf = T5EncoderModel.from_pretrained(path).eval()
  for row, ids in zip(ours, inputs):
    with torch.no_grad():
      states = hf(input_ids=torch.tensor(ids[None], dtype=torch.long)).last_hidden_state[0]
    np.testing.assert_allclose(row, states.mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_cli_reports_the_baselines_and_each_model(tmp_path, monkeypatch, capsys):
  cache = tmp_path / "cache" / "corpora" / "rotten_tomatoes"
  cache.mkdir(parents=True)
  good, bad = "a wonderful moving film", "a dull awful mess"
  rows = {"train": [good] * 12 + [bad] * 8, "validation": [good] * 3 + [bad] * 5}
  for split, texts in rows.items():
    lines = [f"{t}\t{'positive' if t == good else 'negative'}" for t in texts]
    (cache / f"{split}.tsv").write_text("text\tlabel\n" + "\n".join(lines) + "\n")
  monkeypatch.setenv("PROMPT_TUNING_CACHE", str(tmp_path / "cache"))
  model = write_random_model(str(tmp_path / "model"), "tiny", seed=0)
  out = tmp_path / "probe.json"
  assert probe.main([f"--model=tiny={model}", f"--json={out}"]) == 0
  report = json.loads(out.read_text())
  assert report["majority_class"] == {"label": "positive", "accuracy": 3 / 8}
  assert report["bag_of_pieces"] == 1.0  # the words alone give the label away
  assert report["train_examples"] == 20 and report["validation_examples"] == 8
  assert 0.0 <= report["encoders"]["tiny"]["accuracy"] <= 1.0
  table = capsys.readouterr().out
  assert "| majority class of train ('positive') | 0.375 |" in table
  assert "| frozen encoder of tiny, mean-pooled, softmax regression |" in table


def test_cli_errors(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("PROMPT_TUNING_CACHE", str(tmp_path))
  assert probe.main(["--model=x=/nowhere"]) == 1
  assert "prepare_data.py --corpora rotten_tomatoes" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    probe.main(["--model=no-equals-sign"])
  assert "expected NAME=PATH, got 'no-equals-sign'" in capsys.readouterr().err
