"""The T5X-style workflow through the real command lines, in subprocesses.

train → eval → infer → export on a tiny random model and a small TSV task, the
SIGKILL-and-resume bit-for-bit test, and the one-line errors of bad input.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from prompt_tuning.scripts.make_random_model import write_random_model

LABELS = ["negative", "positive"]
WORDS = {"negative": ["awful", "dull", "boring", "bad", "tedious"],
         "positive": ["great", "superb", "lovely", "fine", "moving"]}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A tiny random T5 and a two-class TSV task whose label is a word in the text."""
  root = tmp_path_factory.mktemp("workflow")
  write_random_model(str(root / "model"), "tiny", seed=0)
  rng = np.random.RandomState(0)
  for split, n in [("train", 64), ("validation", 16)]:
    lines = ["text\tlabel"]
    for _ in range(n):
      label = LABELS[rng.randint(2)]
      lines.append(f"the film was {WORDS[label][rng.randint(5)]} overall\t{label}")
    (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")
  return root


def _env():
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="",
             PYTHONUNBUFFERED="1")
  return env


def _task_flags(root, model_dir, steps=12, extra=()):
  return ["--gin_file=configs/prompt_finetune.gin",
          f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{root / 'model'}'",
          "--gin.MIXTURE_OR_TASK_NAME=@tsv_classification_task()",
          "--gin.tsv_classification_task.name='reviews'",
          f"--gin.tsv_classification_task.train='{root / 'train.tsv'}'",
          f"--gin.tsv_classification_task.validation='{root / 'validation.tsv'}'",
          f"--gin.tsv_classification_task.labels={LABELS}",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
          "--gin.BATCH_SIZE=8", "--gin.PROMPT_LENGTH=5", f"--gin.TRAIN_STEPS={steps}",
          "--gin.CHECKPOINT_PERIOD=4", "--gin.EVAL_PERIOD=None", *extra]


def _run(module, args, timeout=240, check=True):
  result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=_env(), timeout=timeout, cwd=pathlib.Path(__file__).parent.parent)
  if check and result.returncode != 0:
    raise AssertionError(f"{module} exited {result.returncode}:\n{result.stderr[-3000:]}")
  return result


def test_train_eval_infer_export(workdir, tmp_path):
  model_dir = tmp_path / "run"
  out = _run("prompt_tuning.train", _task_flags(workdir, model_dir, extra=[
      "--gin.EVAL_PERIOD=12", "--gin_file=gin/prompts/from_class_labels.gin",
      f"--gin.CLASS_LABELS={LABELS}"])).stdout
  assert "reviews/accuracy:" in out and "reviews_rank_classification/accuracy:" in out
  for name in ["config.gin", "operative_config.gin", "config.json", "metrics.jsonl"]:
    assert (model_dir / name).is_file(), name
  assert list((model_dir / "tensorboard").iterdir())
  records = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
  assert {"train/loss", "train/learning_rate", "train/steps_per_sec", "train/tokens_per_sec",
          "train/token_accuracy"} <= set(records[0])
  assert sorted(p.name for p in (model_dir / "prompts").iterdir()) == [
      "step_12.npy", "step_4.npy", "step_8.npy"]
  prompt = np.load(model_dir / "prompts" / "step_12.npy")
  assert prompt.shape == (5, 32)

  out = _run("prompt_tuning.eval", [
      "--gin_file=configs/prompt_eval.gin", f"--gin.MODEL_DIR='{model_dir}'",
      f"--gin.INITIAL_CHECKPOINT_PATH='{workdir / 'model'}'",
      "--gin.MIXTURE_OR_TASK_NAME='reviews'", "--gin.PROMPT_LENGTH=5", "--gin.BATCH_SIZE=8",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
      # the TSV task lives in the training process; register it here too
      f"--gin_bindings=tsv_classification_task.train='{workdir / 'train.tsv'}'",
      "--gin.MIXTURE_OR_TASK_NAME=@tsv_classification_task()",
      "--gin.tsv_classification_task.name='reviews'",
      f"--gin.tsv_classification_task.validation='{workdir / 'validation.tsv'}'",
      f"--gin.tsv_classification_task.labels={LABELS}"]).stdout
  lines = [l for l in out.splitlines() if l.startswith("reviews_rank_classification/accuracy:")]
  assert len(lines) == 1
  accuracy = float(lines[0].split(":")[1])
  assert 0.0 <= accuracy <= 1.0
  saved = json.loads((model_dir / "eval_validation.json").read_text())
  assert saved["step"] == 12 and saved["reviews_rank_classification/accuracy"] == pytest.approx(
      accuracy, abs=1e-4)

  exported = tmp_path / "prompt.npy"
  out = _run("prompt_tuning.scripts.export_prompt",
             [f"--checkpoint_dir={model_dir}", f"--output={exported}"]).stdout
  np.testing.assert_array_equal(np.load(exported), prompt)

  inputs = tmp_path / "inputs.txt"
  inputs.write_text("the film was great overall\nthe film was dull overall\n")
  predictions = tmp_path / "predictions.jsonl"
  _run("prompt_tuning.infer", [
      "--gin_file=configs/prompt_infer.gin",
      f"--gin.INITIAL_CHECKPOINT_PATH='{workdir / 'model'}'", f"--gin.PROMPT_FILE='{exported}'",
      f"--gin.INPUT_FILE='{inputs}'", f"--gin.OUTPUT_FILE='{predictions}'",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}", "--gin.BATCH_SIZE=8"])
  rows = [json.loads(l) for l in predictions.read_text().splitlines()]
  assert [r["inputs"] for r in rows] == ["the film was great overall", "the film was dull overall"]
  assert all(isinstance(r["prediction"], str) for r in rows)


@pytest.mark.parametrize("save_data_iterator", [False, True])
def test_sigkill_and_rerun_gives_the_uninterrupted_prompt_bit_for_bit(workdir, tmp_path,
                                                                      save_data_iterator):
  """Resumed by re-reading the data stream, or from the checkpoint's data iterator."""
  steps = 60
  extra = [f"--gin.train.save_data_iterator={save_data_iterator}"]
  reference = tmp_path / "uninterrupted"
  _run("prompt_tuning.train", _task_flags(workdir, reference, steps))

  killed = tmp_path / "killed"
  args = [sys.executable, "-m", "prompt_tuning.train",
          *_task_flags(workdir, killed, steps, extra)]
  proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          cwd=pathlib.Path(__file__).parent.parent)
  deadline = time.time() + 180
  while not (killed / "prompts" / "step_16.npy").exists():
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    assert time.time() < deadline, "training never reached step 16"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / "prompts" / f"step_{steps}.npy").exists(), "killed too late"
  assert not (killed / "operative_config.gin").exists(), "the killed run must not have finished"

  resumed = _run("prompt_tuning.train", _task_flags(workdir, killed, steps, extra)).stdout
  saved = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
  if save_data_iterator:
    assert "from checkpoint" in resumed and "re-reading" not in resumed, resumed
    assert all((killed / "checkpoints" / str(s) / "data_iterator").is_dir() for s in saved)
  else:
    assert "re-reading the data stream up to batch" in resumed, resumed
    assert not any((killed / "checkpoints" / str(s) / "data_iterator").exists() for s in saved)
  final = np.load(killed / "prompts" / f"step_{steps}.npy")
  np.testing.assert_array_equal(final, np.load(reference / "prompts" / f"step_{steps}.npy"))
  losses = lambda d: {r["step"]: r["train/loss"] for r in map(
      json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "train/loss" in r}
  assert losses(killed)[steps] == losses(reference)[steps]


@pytest.mark.parametrize("args, words", [
    (["--gin_file=configs/no_such.gin"], "gin file 'configs/no_such.gin' not found; searched:"),
    (["--gin_file=configs/prompt_finetune.gin", "--gin.NO_SUCH.param=3"],
     "bad gin configuration"),
    (["--gin_file=configs/prompt_finetune.gin", "--gin.MODEL_DIR='/tmp/x'",
      "--gin.MIXTURE_OR_TASK_NAME='rotten_tomatoes'",
      "--gin.INITIAL_CHECKPOINT_PATH='/no/such/model'"],
     "INITIAL_CHECKPOINT_PATH /no/such/model does not exist"),
    (["--gin_file"], "--gin_file needs a value"),
    (["--learning_rate=3"], "unknown flag --learning_rate"),
])
def test_bad_command_lines_fail_in_one_line(args, words):
  result = _run("prompt_tuning.train", args, check=False)
  assert result.returncode != 0
  assert words in result.stderr
  assert "Traceback" not in result.stderr


def test_model_dir_of_another_model_names_the_shape(workdir, tmp_path):
  model_dir = tmp_path / "run"
  _run("prompt_tuning.train", _task_flags(workdir, model_dir, steps=4))
  result = _run("prompt_tuning.train", _task_flags(workdir, model_dir, steps=8,
                                                   extra=["--gin.PROMPT_LENGTH=7"]), check=False)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert "(5, 32)" in result.stderr and "(7, 32)" in result.stderr


def test_prompt_file_of_the_wrong_shape_is_refused(workdir, tmp_path):
  bad = tmp_path / "bad.npy"
  np.save(bad, np.zeros((5, 16), np.float32))
  inputs = tmp_path / "inputs.txt"
  inputs.write_text("the film was great overall\n")
  result = _run("prompt_tuning.infer", [
      "--gin_file=configs/prompt_infer.gin",
      f"--gin.INITIAL_CHECKPOINT_PATH='{workdir / 'model'}'", f"--gin.PROMPT_FILE='{bad}'",
      f"--gin.INPUT_FILE='{inputs}'", f"--gin.OUTPUT_FILE='{tmp_path / 'out.jsonl'}'"],
      check=False)
  assert result.returncode == 1
  assert "(5, 16)" in result.stderr and "(5, 32)" in result.stderr
  assert "Traceback" not in result.stderr


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(workdir, tmp_path):
  model_dir = tmp_path / "run"
  result = _run("prompt_tuning.train", _task_flags(workdir, model_dir, steps=40, extra=[
      # An infinite learning rate: the first update makes the prompt infinite.
      "--gin.constant_schedule.value=1e400", "--gin.adafactor.clipping_threshold=None",
      "--gin.LossConfig.z_loss=0.0"]), check=False)
  assert result.returncode == 1, result.stderr[-2000:]
  assert "the loss is nan" in result.stderr or "the loss is inf" in result.stderr
  assert "Traceback" not in result.stderr
  saved = sorted(int(p.name) for p in (model_dir / "checkpoints").iterdir() if p.name.isdigit())
  for step in saved:
    assert np.isfinite(np.load(model_dir / "prompts" / f"step_{step}.npy")).all()
