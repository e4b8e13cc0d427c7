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
  write_word_task(root, {"train": 64, "validation": 16})
  return root


def write_word_task(root, sizes):
  """`<root>/<split>.tsv` for each split of `sizes`: rows "the film was <word> overall"
  whose label the word gives away, drawn from a fixed seed."""
  rng = np.random.RandomState(0)
  for split, n in sizes.items():
    lines = ["text\tlabel"]
    for _ in range(n):
      label = LABELS[rng.randint(2)]
      lines.append(f"the film was {WORDS[label][rng.randint(5)]} overall\t{label}")
    (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")


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
      "step_12.npy", "step_12.npy.json", "step_4.npy", "step_4.npy.json", "step_8.npy",
      "step_8.npy.json"]
  side = json.loads((model_dir / "prompts" / "step_12.npy.json").read_text())
  assert side["method"] == "prompt_tuning" and side["arrays"]["prompt"]["shape"] == [5, 32]
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


def _kill_and_resume(workdir, tmp_path, steps, extra, kill_after, export="npy"):
  """Trains `steps` uninterrupted, and again killed (SIGKILL) once checkpoint
  `kill_after` is written then rerun; returns (the rerun's stdout, both MODEL_DIRs)."""
  reference = tmp_path / "uninterrupted"
  _run("prompt_tuning.train", _task_flags(workdir, reference, steps, extra))

  killed = tmp_path / "killed"
  args = [sys.executable, "-m", "prompt_tuning.train",
          *_task_flags(workdir, killed, steps, extra)]
  proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          cwd=pathlib.Path(__file__).parent.parent)
  deadline = time.time() + 180
  while not (killed / "prompts" / f"step_{kill_after}.{export}").exists():
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    assert time.time() < deadline, f"training never reached step {kill_after}"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / "prompts" / f"step_{steps}.{export}").exists(), "killed too late"
  assert not (killed / "operative_config.gin").exists(), "the killed run must not have finished"
  resumed = _run("prompt_tuning.train", _task_flags(workdir, killed, steps, extra)).stdout
  losses = lambda d: {r["step"]: r["train/loss"] for r in map(
      json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "train/loss" in r}
  assert losses(killed)[steps] == losses(reference)[steps]
  return resumed, reference, killed


@pytest.mark.parametrize("save_data_iterator", [False, True])
def test_sigkill_and_rerun_gives_the_uninterrupted_prompt_bit_for_bit(workdir, tmp_path,
                                                                      save_data_iterator):
  """Resumed by re-reading the data stream, or from the checkpoint's data iterator."""
  steps = 60
  extra = [f"--gin.train.save_data_iterator={save_data_iterator}"]
  resumed, reference, killed = _kill_and_resume(workdir, tmp_path, steps, extra, 16)
  saved = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
  if save_data_iterator:
    assert "from checkpoint" in resumed and "re-reading" not in resumed, resumed
    assert all((killed / "checkpoints" / str(s) / "data_iterator").is_dir() for s in saved)
  else:
    assert "re-reading the data stream up to batch" in resumed, resumed
    assert not any((killed / "checkpoints" / str(s) / "data_iterator").exists() for s in saved)
  final = np.load(killed / "prompts" / f"step_{steps}.npy")
  np.testing.assert_array_equal(final, np.load(reference / "prompts" / f"step_{steps}.npy"))


PREFIX = ["--gin_file=gin/methods/prefix_tuning.gin", "--gin.PREFIX_LENGTH=3",
          "--gin.PREFIX_HIDDEN_DIM=16"]


def _npz(path):
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


def test_prefix_tuning_trains_evaluates_exports_and_infers(workdir, tmp_path):
  model_dir = tmp_path / "run"
  out = _run("prompt_tuning.train", _task_flags(workdir, model_dir, extra=[
      "--gin.EVAL_PERIOD=12", *PREFIX])).stdout
  assert "reviews/accuracy:" in out and "reviews_rank_classification/accuracy:" in out
  assert sorted(p.name for p in (model_dir / "prompts").iterdir() if p.suffix == ".npz") == [
      "step_12.npz", "step_4.npz", "step_8.npz"]
  side = json.loads((model_dir / "prompts" / "step_12.npz.json").read_text())
  assert side["method"] == "prefix_tuning" and side["step"] == 12
  assert side["settings"]["attention"] == ["encoder", "decoder", "cross"]
  assert side["arrays"]["cross/layers_1/value"]["shape"] == [3, 4, 8]
  assert side["frozen_fingerprint"].startswith("sha256:")

  exported = tmp_path / "prefixes.npz"
  out = _run("prompt_tuning.scripts.export_prompt",
             [f"--checkpoint_dir={model_dir}", f"--output={exported}"]).stdout
  assert "12 arrays of step 12" in out, out
  arrays = _npz(exported)
  assert len(arrays) == 12  # (encoder, decoder, cross) x 2 layers x (key, value), no MLP
  for name, value in _npz(model_dir / "prompts" / "step_12.npz").items():
    np.testing.assert_array_equal(arrays[name], value)
  bad = _run("prompt_tuning.scripts.export_prompt",
             [f"--checkpoint_dir={model_dir}", f"--output={tmp_path / 'p.npy'}"], check=False)
  assert bad.returncode == 1 and "name the output p.npz" in bad.stderr

  task = ["--gin.MIXTURE_OR_TASK_NAME=@tsv_classification_task()",
          "--gin.tsv_classification_task.name='reviews'",
          f"--gin.tsv_classification_task.train='{workdir / 'train.tsv'}'",
          f"--gin.tsv_classification_task.validation='{workdir / 'validation.tsv'}'",
          f"--gin.tsv_classification_task.labels={LABELS}"]
  evaluate = lambda model: _run("prompt_tuning.eval", [
      "--gin_file=configs/prompt_eval.gin", *PREFIX, f"--gin.PROMPT_FILE='{exported}'",
      f"--gin.INITIAL_CHECKPOINT_PATH='{model}'", "--gin.BATCH_SIZE=8",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}", *task], check=False)
  from_file = evaluate(workdir / "model")
  assert from_file.returncode == 0, from_file.stderr[-2000:]
  from_run = _run("prompt_tuning.eval", [
      "--gin_file=configs/prompt_eval.gin", *PREFIX, f"--gin.MODEL_DIR='{model_dir}'",
      f"--gin.INITIAL_CHECKPOINT_PATH='{workdir / 'model'}'", "--gin.BATCH_SIZE=8",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}", *task]).stdout
  metric = lambda text: [l for l in text.splitlines()
                         if l.startswith("reviews_rank_classification/accuracy:")]
  assert len(metric(from_file.stdout)) == 1
  assert metric(from_file.stdout) == metric(from_run)  # the export computes what training did

  write_random_model(str(tmp_path / "other"), "tiny", seed=1)
  other = evaluate(tmp_path / "other")
  assert other.returncode == 1 and "same shape, other weights" in other.stderr, other.stderr
  assert "Traceback" not in other.stderr

  inputs = tmp_path / "inputs.txt"
  inputs.write_text("the film was great overall\nthe film was dull overall\n")
  predictions = tmp_path / "predictions.jsonl"
  _run("prompt_tuning.infer", [
      "--gin_file=configs/prompt_infer.gin", *PREFIX,
      f"--gin.INITIAL_CHECKPOINT_PATH='{workdir / 'model'}'", f"--gin.PROMPT_FILE='{exported}'",
      f"--gin.INPUT_FILE='{inputs}'", f"--gin.OUTPUT_FILE='{predictions}'",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}", "--gin.BATCH_SIZE=8"])
  rows = [json.loads(l) for l in predictions.read_text().splitlines()]
  assert len(rows) == 2 and all(isinstance(r["prediction"], str) for r in rows)


def test_prefix_tuning_resumes_after_sigkill_bit_for_bit(workdir, tmp_path):
  steps = 24
  _, reference, killed = _kill_and_resume(workdir, tmp_path, steps, PREFIX, 8, export="npz")
  final, want = (_npz(d / "prompts" / f"step_{steps}.npz") for d in (killed, reference))
  assert sorted(final) == sorted(want)
  for name in want:
    np.testing.assert_array_equal(final[name], want[name])


P_TUNING = ["--gin_file=gin/methods/p_tuning.gin", "--gin.P_TUNING_LENGTH=4",
            "--gin.ENCODER_HIDDEN_SIZE=8", "--gin.P_TUNING_TEMPLATE='[P:2] {text} [P:2] It was'"]
DEEP_PROMPTS = ["--gin_file=gin/methods/deep_prompts.gin", "--gin.DEEP_PROMPT_LENGTH=3"]


def test_p_tuning_resumes_after_sigkill_bit_for_bit_and_exports_the_encoders_prompt(
    workdir, tmp_path):
  from prompt_tuning.methods import from_description
  from prompt_tuning.methods.p_tuning import encode_prompt
  from prompt_tuning.io.runs import read_params
  steps = 12
  _, reference, killed = _kill_and_resume(workdir, tmp_path, steps, P_TUNING, 4)
  final = np.load(killed / "prompts" / f"step_{steps}.npy")
  np.testing.assert_array_equal(final, np.load(reference / "prompts" / f"step_{steps}.npy"))
  side = json.loads((killed / "prompts" / f"step_{steps}.npy.json").read_text())
  assert side["method"] == "p_tuning" and side["settings"]["placement"] == "template"
  assert from_description({"name": "p_tuning", "settings": side["settings"]}).length == 4
  step, params = read_params(killed / "checkpoints")
  assert step == steps and sorted(params["encoder_prompt"]) == ["lstm", "mlp", "virtual_tokens"]
  np.testing.assert_array_equal(final, np.asarray(encode_prompt(params["encoder_prompt"],
                                                                "lstm")))


def test_deep_prompts_resume_after_sigkill_bit_for_bit(workdir, tmp_path):
  steps = 12
  _, reference, killed = _kill_and_resume(workdir, tmp_path, steps, DEEP_PROMPTS, 4,
                                          export="npz")
  final, want = (_npz(d / "prompts" / f"step_{steps}.npz") for d in (killed, reference))
  assert sorted(final) == ["encoder/layers_0/key", "encoder/layers_0/value",
                           "encoder/layers_1/key", "encoder/layers_1/value"]
  for name in want:
    np.testing.assert_array_equal(final[name], want[name])


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
  assert "loss is nan at step" in result.stderr or "loss is inf at step" in result.stderr
  assert "Traceback" not in result.stderr
  saved = sorted(int(p.name) for p in (model_dir / "checkpoints").iterdir() if p.name.isdigit())
  for step in saved:
    assert np.isfinite(np.load(model_dir / "prompts" / f"step_{step}.npy")).all()
