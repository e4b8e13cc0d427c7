"""scripts/results.py: the grid, the aggregation against numpy, and a reduced run end to end.

The end-to-end test trains the reference prompt cell and full fine-tuning for 4 steps of
a tiny random T5 on a small rotten_tomatoes corpus written here, then checks the numbers
in results.json against metrics.jsonl, the corpus and the checkpoint themselves.
"""
import collections
import csv
import glob
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from repo_paths import REPO_ROOT
from prompt_tuning.scripts.make_random_model import write_random_model

SCRIPT = REPO_ROOT / "scripts" / "results.py"
_spec = importlib.util.spec_from_file_location("results_script", SCRIPT)
results = importlib.util.module_from_spec(_spec)
sys.modules["results_script"] = results  # dataclasses look their module up by name
_spec.loader.exec_module(results)

WORDS = "the film plot was great dull moving awful and every actor felt fine".split()
# Train is mostly negative, validation mostly positive: the majority class is the train
# split's label, so its validation accuracy (7/16) is not validation's own majority (9/16).
SPLITS = {"train": {"negative": 30, "positive": 18}, "validation": {"negative": 7, "positive": 9},
          "test": {"negative": 4, "positive": 4}}


def test_grid_has_each_configuration_once_and_shares_the_reference():
  cells, groups = results.grid()
  assert [c.name for c in cells] == ["prompt_lm", "prompt_span", "prompt_multitask", "full",
                                     "init_sampled_vocab", "init_uniform", "length_1",
                                     "length_5", "length_100", "full_multitask",
                                     "init_sampled_vocab_multitask", "init_uniform_multitask",
                                     "length_1_multitask", "length_5_multitask",
                                     "length_100_multitask"]
  assert len({c.key for c in cells}) == len(cells)
  # On the multi-task model its quickstart cell is the reference of each comparison.
  assert groups["mt_init"] == ["prompt_multitask", "init_sampled_vocab_multitask",
                               "init_uniform_multitask"]
  assert groups["mt_length"][2] == "prompt_multitask"
  assert results.short_label({"init": "uniform"}, "mt_init") == "uniform"
  # Class-label init and length 20 are the reference cell, not runs of their own.
  assert groups["init"] == ["prompt_lm", "init_sampled_vocab", "init_uniform"]
  assert groups["length"] == ["length_1", "length_5", "prompt_lm", "length_100"]
  assert [c.name for c in results.select(cells, "length_?,length_??,length_???,full")] == [
      "full", "length_1", "length_5", "length_100"]


def test_class_labels_that_do_not_fit_start_from_sampled_vocab():
  cell = results.Cell("length_5", prompt_length=5)
  assert results.effective_init(cell, 2) == "class_labels"
  assert results.effective_init(cell, 8) == "sampled_vocab"
  assert results.effective_init(results.REFERENCE, 20) == "class_labels"
  assert results.effective_init(results.Cell("full", mode="full"), 2) is None
  command = results.train_command("reuters_r8", cell, 3, ["a"] * 8, "/m", "/d", 10)
  assert "--gin_file=gin/prompts/from_sampled_vocab.gin" in command
  assert "--gin.train.seed=3" in command and "--gin.PROMPT_LENGTH=5" in command
  full = results.train_command("rotten_tomatoes", results.Cell("full", mode="full"), 0,
                               ["negative", "positive"], "/m", "/d", 10)
  assert full[3:5] == ["--gin_file=configs/quickstart.gin", "--gin_file=configs/full_finetune.gin"]
  tuned = results.train_command("rotten_tomatoes", results.REFERENCE, 0, ["negative", "positive"],
                                "/m", "/d", 10, extra=["constant_schedule.value=0.03"])
  assert tuned[-1] == "--gin.constant_schedule.value=0.03"  # last, so it wins over the cell's


def test_aggregate_matches_numpy():
  rng = np.random.RandomState(0)
  values = {(t, c): rng.uniform(size=3) for t in ("rotten_tomatoes", "reuters_r8")
            for c in ("prompt_lm", "full")}
  runs = [{"task": t, "cell": c, "seed": k, "accuracy": float(v[k]),
           "decode_accuracy": float(v[k]) / 2}
          for (t, c), v in values.items() for k in range(3)]
  runs.append({"task": "reuters_r8", "cell": "full", "seed": 3, "accuracy": None})  # unfinished
  runs.append({"task": "reuters_r8", "cell": "length_1", "seed": 0, "accuracy": 0.25,
               "decode_accuracy": None})
  aggregates = results.aggregate(runs)
  for (t, c), v in values.items():
    stats = aggregates[t][c]["accuracy"]
    assert stats["n"] == 3
    np.testing.assert_allclose(stats["mean"], np.mean(v), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], np.std(v, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(aggregates[t][c]["decode_accuracy"]["mean"], np.mean(v) / 2,
                               rtol=1e-12)
  single = aggregates["reuters_r8"]["length_1"]
  assert single["accuracy"] == {"mean": 0.25, "std": 0.0, "n": 1, "values": [0.25]}
  assert "decode_accuracy" not in single


def test_a_prompt_at_the_majority_class_does_not_meet_the_goal():
  stat = lambda mean: {"accuracy": {"mean": mean, "std": 0.0, "n": 3, "values": [mean] * 3}}
  cells = {"prompt_lm": {"percent_of_model": 0.06}}
  weak_full = {"rotten_tomatoes": {"prompt_lm": stat(0.642), "full": stat(0.62),
                                   "majority": stat(0.642)}}
  g = results.goal(weak_full, cells)
  assert g["ratio"] > 1.0 and not g["met"]
  assert "the majority class scores 0.6420" in results.goal_line(g)
  learnt = {"rotten_tomatoes": {"prompt_lm": stat(0.70), "full": stat(0.75),
                                "majority": stat(0.642)}}
  assert results.goal(learnt, cells)["met"]
  assert not results.goal(learnt, {"prompt_lm": {"percent_of_model": 0.6}})["met"]


def test_a_run_counts_as_finished_only_with_the_last_steps_evaluation(tmp_path):
  key = "eval/rotten_tomatoes_rank_classification/accuracy"
  lines = [json.dumps({"step": 4, "train/loss": 1.0}), json.dumps({"step": 2, key: 0.5})]
  (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "eval/rot')
  assert results.read_metrics(str(tmp_path / "not_started")) == []
  records = results.read_metrics(str(tmp_path))
  assert len(records) == 2  # the torn last line is skipped
  assert results.final_eval(records, "rotten_tomatoes", 4) is None
  assert results.final_eval(records, "rotten_tomatoes", 2)["accuracy"] == 0.5


def _write_corpus(cache):
  rng = np.random.RandomState(0)
  directory = cache / "corpora" / "rotten_tomatoes"
  directory.mkdir(parents=True)
  for split, counts in SPLITS.items():
    labels = [label for label, n in counts.items() for _ in range(n)]
    rng.shuffle(labels)
    rows = [" ".join(rng.choice(WORDS, 8)) + "\t" + label for label in labels]
    (directory / f"{split}.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n")


def _script(args, cache):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="",
             PROMPT_TUNING_CACHE=str(cache))
  return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                        env=env, timeout=600, cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
  """The reference prompt and full fine-tuning, 4 steps, one seed, on a tiny random T5."""
  root = tmp_path_factory.mktemp("results")
  _write_corpus(root / "cache")
  model = write_random_model(str(root / "model"), "tiny", seed=0)
  args = [f"--out_dir={root / 'out'}", f"--lm_adapted={model}", "--tasks=rotten_tomatoes",
          "--seeds=0", "--train_steps=4", "--only=prompt_lm,full"]
  result = _script(args, root / "cache")
  assert result.returncode == 0, result.stderr[-3000:]
  return root, args, result.stdout


def _independent_majority(cache):
  """The train split's most frequent label and its share of validation, read with csv."""
  def labels(split):
    path = cache / "corpora" / "rotten_tomatoes" / f"{split}.tsv"
    with open(path, newline="") as f:
      return [row["label"] for row in csv.DictReader(f, delimiter="\t")]
  best = collections.Counter(labels("train")).most_common(1)[0][0]
  validation = labels("validation")
  return best, validation.count(best) / len(validation)


def test_results_hold_the_runs_numbers(reduced):
  root, _, stdout = reduced
  out = root / "out"
  report = json.loads((out / "results.json").read_text())
  assert "[1/2] rotten_tomatoes/prompt_lm/seed0: training" in stdout
  assert "[2/2] rotten_tomatoes/full/seed0: training" in stdout
  assert [(r["cell"], r["status"]) for r in report["runs"]] == [("prompt_lm", "done"),
                                                               ("full", "done")]
  n_validation = sum(SPLITS["validation"].values())
  for run in report["runs"]:
    records = [json.loads(l) for l in
               (out / "runs" / "rotten_tomatoes" / run["cell"] / "seed0" / "metrics.jsonl")
               .read_text().splitlines()]
    last = [r for r in records if r["step"] == 4 and
            "eval/rotten_tomatoes_rank_classification/accuracy" in r][-1]
    assert run["accuracy"] == last["eval/rotten_tomatoes_rank_classification/accuracy"]
    assert run["decode_accuracy"] == last["eval/rotten_tomatoes/accuracy"]
    for value in (run["accuracy"], run["decode_accuracy"]):
      assert 0.0 <= value <= 1.0
      assert value * n_validation == pytest.approx(round(value * n_validation))
    stats = report["aggregates"]["rotten_tomatoes"][run["cell"]]["accuracy"]
    assert (stats["mean"], stats["std"], stats["n"]) == (run["accuracy"], 0.0, 1)
    # Full fine-tuning trained every weight with its own optimiser (full_finetune.gin).
    full = run["cell"] == "full"
    saved = json.loads((pathlib.Path(run["model_dir"]) / "config.json").read_text())
    assert saved["mode"] == ("full" if full else "prompt")
    assert records[0]["train/learning_rate"] == pytest.approx(1e-3 if full else 0.3)

  label, accuracy = _independent_majority(root / "cache")
  assert (label, accuracy) == ("negative", 7 / 16)
  assert report["majority"]["rotten_tomatoes"]["label"] == label
  assert report["majority"]["rotten_tomatoes"]["accuracy"] == pytest.approx(accuracy)
  assert report["aggregates"]["rotten_tomatoes"]["majority"]["accuracy"]["mean"] == (
      pytest.approx(accuracy))


def test_parameter_counts_come_from_the_checkpoint(reduced):
  root, _, _ = reduced
  from safetensors.numpy import load_file
  tensors = {}
  for path in glob.glob(str(root / "model" / "*.safetensors")):
    tensors.update(load_file(path))
  total = sum(t.size for t in tensors.values())
  d_model = json.loads((root / "model" / "config.json").read_text())["d_model"]
  cells = json.loads((root / "out" / "results.json").read_text())["cells"]
  assert cells["prompt_lm"]["trainable_parameters"] == 20 * d_model
  assert cells["prompt_lm"]["percent_of_model"] == pytest.approx(100 * 20 * d_model / total)
  assert cells["full"]["trainable_parameters"] == total
  assert cells["full"]["percent_of_model"] == pytest.approx(100.0)


def test_table_plot_and_goal_line(reduced):
  root, _, stdout = reduced
  out = root / "out"
  report = json.loads((out / "results.json").read_text())
  g = report["goal"]
  aggregates = report["aggregates"]["rotten_tomatoes"]
  assert g["ratio"] == pytest.approx(aggregates["prompt_lm"]["accuracy"]["mean"]
                                     / aggregates["full"]["accuracy"]["mean"])
  majority = aggregates["majority"]["accuracy"]["mean"]
  assert g["majority_accuracy"] == pytest.approx(majority)
  assert g["met"] == (g["ratio"] >= 0.9 and g["percent_of_parameters"] < 0.5
                      and g["prompt_accuracy"] > majority)
  table = (out / "results.md").read_text()
  assert table in stdout
  d_model = json.loads((root / "model" / "config.json").read_text())["d_model"]
  row = [l for l in table.splitlines() if l.startswith("| prompt, LM-adapted")][0]
  assert f"| {20 * d_model:,} |" in row
  assert f"{aggregates['prompt_lm']['accuracy']['mean']:.3f} ± 0.000 (1)" in row
  assert "| majority class (train split) | 0 |" in table
  assert "goal: prompt tuning (LM-adapted, reference cell) reaches" in table
  assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert (out / "results.png").stat().st_size > 10_000


def test_a_rerun_skips_finished_runs(reduced):
  root, args, _ = reduced
  metrics = root / "out" / "runs" / "rotten_tomatoes" / "prompt_lm" / "seed0" / "metrics.jsonl"
  before = metrics.read_bytes()
  result = _script(args, root / "cache")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "[1/2] rotten_tomatoes/prompt_lm/seed0: done" in result.stdout
  assert "[2/2] rotten_tomatoes/full/seed0: done" in result.stdout
  assert ": training" not in result.stdout
  assert metrics.read_bytes() == before


def test_a_second_copy_on_the_same_out_dir_stops_before_training(reduced):
  root, args, _ = reduced
  held = results.lock_out_dir(str(root / "out"))  # as a first copy still running would
  try:
    result = _script(args, root / "cache")
    assert result.returncode == 1
    assert f"another scripts/results.py is running on {root / 'out'}" in result.stderr
    assert "[1/2]" not in result.stdout
  finally:
    held.close()
  assert _script(args, root / "cache").returncode == 0  # free again once the first ends


def test_bindings_reach_every_command_and_a_bad_one_is_refused(reduced):
  root, args, _ = reduced
  result = _script(args + ["--binding=constant_schedule.value=0.03", "--dry_run"], root / "cache")
  assert result.returncode == 0, result.stderr[-3000:]
  commands = [l for l in result.stdout.splitlines() if "prompt_tuning.train" in l]
  assert len(commands) == 2
  assert all(c.endswith("--gin.constant_schedule.value=0.03") for c in commands)
  bad = _script(args + ["--binding=0.03", "--dry_run"], root / "cache")
  assert bad.returncode == 2 and "--binding takes KEY=VALUE" in bad.stderr


def test_model_paths_default_to_the_embedded_models_and_errors_say_what_to_pass(
    tmp_path, monkeypatch):
  import prompt_tuning.assets as assets
  assert results.resolve_model("lm_adapted", None) == assets.embedded_model_path("t5_lm_adapted")
  assert results.resolve_model("span_corruption", str(tmp_path)) == str(tmp_path)
  with pytest.raises(FileNotFoundError, match="--lm_adapted=/nowhere does not exist"):
    results.resolve_model("lm_adapted", "/nowhere")
  monkeypatch.setattr(assets, "ASSETS_DIR", tmp_path)  # an installation without them
  with pytest.raises(FileNotFoundError, match="--span_corruption=PATH"):
    results.resolve_model("span_corruption", None)
