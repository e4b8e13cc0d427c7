"""Bad input, one clear error each: the exit code, one `error:` line, nothing half-written.

Each case runs the training command in-process (`gin_utils.run`, as `python -m
prompt_tuning.train` does) on a tiny random T5 and a two-class TSV task, and compares
the files under the case's folder before and after: a refused run leaves them as they
were; a run stopped on purpose (a NaN loss, SIGINT, SIGTERM) leaves only complete
checkpoints.
"""
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time
from typing import Callable, Optional

import numpy as np
import pytest

from prompt_tuning import gin_utils
from prompt_tuning.scripts.make_random_model import write_random_model
from test_workflow import LABELS, WORDS, write_word_task
PROMPT_LENGTH, EMBED = 5, 32  # the tiny preset's embedding width


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A tiny random T5, a good TSV task, and a trained 4-step MODEL_DIR to resume."""
  root = tmp_path_factory.mktemp("bad_input")
  write_random_model(str(root / "model"), "tiny", seed=0)
  write_word_task(root, {"train": 32, "validation": 8})
  from prompt_tuning.train import __main__ as train_main
  assert train_main.main(_flags(root, root / "trained", steps=4)) == 0
  return root


def _flags(root, model_dir, steps=4, train_tsv=None, extra=()):
  return ["--gin_file=configs/prompt_finetune.gin",
          f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{root / 'model'}'",
          "--gin.MIXTURE_OR_TASK_NAME=@tsv_classification_task()",
          "--gin.tsv_classification_task.name='bad_input_reviews'",
          f"--gin.tsv_classification_task.train='{train_tsv or root / 'train.tsv'}'",
          f"--gin.tsv_classification_task.validation='{root / 'validation.tsv'}'",
          f"--gin.tsv_classification_task.labels={LABELS}",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
          "--gin.BATCH_SIZE=8", f"--gin.PROMPT_LENGTH={PROMPT_LENGTH}",
          f"--gin.TRAIN_STEPS={steps}", "--gin.CHECKPOINT_PERIOD=4", "--gin.EVAL_PERIOD=None",
          "--gin.LossConfig.enable_dropout=False", *extra]


_CAPTURED = {}


def _train(argv):
  """(exit code, stdout, stderr) of `python -m prompt_tuning.train argv`, in-process."""
  from prompt_tuning.train import __main__ as train_main
  capture = _CAPTURED["capsys"]
  capture.readouterr()
  code = train_main.main(argv)
  out, err = capture.readouterr()
  return code, out, err


@pytest.fixture(autouse=True)
def _capture(capsys):
  _CAPTURED["capsys"] = capsys
  yield
  _CAPTURED.clear()


def _files(root: pathlib.Path) -> dict[str, tuple[int, int]]:
  """Every file and folder under `root`: {relative path: (size, mtime_ns)}."""
  if not root.exists():
    return {}
  return {str(p.relative_to(root)): (0 if p.is_dir() else p.stat().st_size,
                                     p.stat().st_mtime_ns)
          for p in sorted(root.rglob("*"))}


def _steps(model_dir: pathlib.Path) -> list[int]:
  folder = model_dir / "checkpoints"
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _no_temporaries(model_dir: pathlib.Path) -> None:
  left = [str(p) for p in model_dir.rglob("*") if "tmp" in p.name]
  assert not left, f"half-written files left: {left}"


@dataclasses.dataclass
class Case:
  """`setup(workdir, case_dir)` → argv; the run must exit `code` with `phrase` in its line."""
  setup: Callable[[pathlib.Path, pathlib.Path], list]
  code: int
  phrase: str
  # Called with (case_dir, stdout, stderr) for cases that may write on purpose;
  # otherwise the case folder must be left exactly as it was.
  after: Optional[Callable] = None
  line: str = "error:"


def _run_dir(case_dir):
  return case_dir / "run"


def _simple(*extra, steps=4):
  return lambda root, case_dir: _flags(root, _run_dir(case_dir), steps, extra=extra)


def _with_prompt(array):
  def setup(root, case_dir):
    path = case_dir / "prompt.npy"
    np.save(path, array)
    return _flags(root, _run_dir(case_dir), extra=[
        "--gin_file=gin/prompts/from_file.gin", f"--gin.PROMPT_FILE='{path}'"])
  return setup


def _with_model(change):
  """A copy of the tiny model changed by `change(folder)`, as INITIAL_CHECKPOINT_PATH."""
  def setup(root, case_dir):
    model = case_dir / "model"
    shutil.copytree(root / "model", model)
    change(model)
    return _flags(root, _run_dir(case_dir), extra=[f"--gin.INITIAL_CHECKPOINT_PATH='{model}'"])
  return setup


def _truncate(model):
  path = model / "model.safetensors"
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def _wrong_config(model):
  path = model / "config.json"
  config = json.loads(path.read_text())
  config["d_model"] = config["d_model"] * 2
  path.write_text(json.dumps(config))


def _resume(*extra, model=None):
  """Resume the trained 4-step MODEL_DIR (a copy) to step 8 with other settings."""
  def setup(root, case_dir):
    shutil.copytree(root / "trained", _run_dir(case_dir))
    flags = list(extra)
    if model:
      other = case_dir / "other_model"
      write_random_model(str(other), model, seed=1)
      flags.append(f"--gin.INITIAL_CHECKPOINT_PATH='{other}'")
    return _flags(root, _run_dir(case_dir), steps=8, extra=flags)
  return setup


def _with_tsv(content):
  def setup(root, case_dir):
    path = case_dir / "train.tsv"
    path.write_bytes(content)
    return _flags(root, _run_dir(case_dir), train_tsv=path)
  return setup


def _good_rows(n=16):
  return "".join(f"the film was {WORDS[LABELS[i % 2]][i % 5]}\t{LABELS[i % 2]}\n"
                 for i in range(n))


def _long_inputs(root, case_dir):
  long = " ".join(["a long rambling review that goes on"] * 8)
  path = case_dir / "train.tsv"
  path.write_text("text\tlabel\n" + "".join(f"{long} great\tpositive\n{long} awful\tnegative\n"
                                             for _ in range(8)))
  return _flags(root, _run_dir(case_dir), train_tsv=path)


def _truncation_said_once(case_dir, out, err):
  said = [l for l in (out + err).splitlines() if "truncated" in l]  # once, not per batch
  assert len(said) == 1, said
  assert _steps(_run_dir(case_dir)) == [4]


def _unwritable(root, case_dir):
  locked = case_dir / "locked"
  locked.mkdir()
  os.chmod(locked, 0o555)
  if os.access(locked, os.W_OK):  # root: make it immutable instead
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode:
      pytest.skip("cannot make a folder unwritable here")
  return _flags(root, locked / "run")


def _model_dir_is_file(root, case_dir):
  path = case_dir / "run"
  path.write_text("not a folder\n")
  return _flags(root, path)


def _nan_stopped(case_dir, out, err):
  model_dir = _run_dir(case_dir)
  _no_temporaries(model_dir)
  steps = _steps(model_dir)
  assert steps == [4], steps
  for step in steps:
    assert np.isfinite(np.load(model_dir / "prompts" / f"step_{step}.npy")).all()


def _nan_setup(root, case_dir):
  """Resume the trained 4-step run with an infinite learning rate: step 5's update makes
  the prompt infinite, so step 6's loss is the first that is not finite."""
  shutil.copytree(root / "trained", _run_dir(case_dir))
  return _flags(root, _run_dir(case_dir), steps=12, extra=["--gin.constant_schedule.value=1e400"])


def _signal_setup(sig):
  """Send `sig` to this process once step 2 is logged; checkpoints are due every 100."""
  def setup(root, case_dir):
    model_dir = _run_dir(case_dir)
    metrics = model_dir / "metrics.jsonl"

    def send():
      deadline = time.time() + 300
      while time.time() < deadline and not (
          metrics.exists() and '"step": 2,' in metrics.read_text()):
        time.sleep(0.05)
      os.kill(os.getpid(), sig)
    threading.Thread(target=send, daemon=True).start()
    return _flags(root, model_dir, steps=400, extra=["--gin.CHECKPOINT_PERIOD=100",
                                                     "--gin.train.log_period=1"])
  return setup


def _saved_on_signal(case_dir, out, err):
  model_dir = _run_dir(case_dir)
  _no_temporaries(model_dir)
  steps = _steps(model_dir)
  assert len(steps) == 1 and 2 <= steps[0] < 100, f"no checkpoint at the signal: {steps}"
  assert f"at step {steps[0]}; saved checkpoint {steps[0]}" in err
  assert (model_dir / "prompts" / f"step_{steps[0]}.npy").is_file()


def _half_written_checkpoint(root, case_dir):
  """What kill -9 during orbax's write of step 8 leaves: a temporary step folder."""
  model_dir = _run_dir(case_dir)
  shutil.copytree(root / "trained", model_dir)
  shutil.copytree(model_dir / "checkpoints" / "4",
                  model_dir / "checkpoints" / "8.orbax-checkpoint-tmp-1234567")
  (model_dir / "checkpoints" / "8.orbax-checkpoint-tmp-1234567" / "params").rename(
      model_dir / "checkpoints" / "8.orbax-checkpoint-tmp-1234567" / "params.tmp")
  return _flags(root, model_dir, steps=8)


def _resumed_from_last_complete(case_dir, out, err):
  model_dir = _run_dir(case_dir)
  _no_temporaries(model_dir)
  assert _steps(model_dir) == [4, 8]
  records = [json.loads(l) for l in (model_dir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records][-1] == 8
  assert 5 in [r["step"] for r in records], "the run did not resume from step 4"
  assert "truncated" not in err, "short inputs were said to be truncated"


CASES = {
    "gin_unknown_parameter": Case(_simple("--gin.train.no_such_parameter=3"), 2,
                                  "no_such_parameter"),
    "gin_file_misspelled": Case(_simple("--gin_file=configs/prompt_finetun.gin"), 2,
                                "gin file 'configs/prompt_finetun.gin' not found"),
    "binding_wrong_type": Case(_simple("--gin.BATCH_SIZE='eight'"), 1,
                               "BATCH_SIZE must be a positive integer"),
    "prompt_length_zero": Case(_simple("--gin.PROMPT_LENGTH=0"), 1,
                               "PROMPT_LENGTH must be a positive integer"),
    "prompt_length_negative": Case(_simple("--gin.PROMPT_LENGTH=-3"), 1, "got -3"),
    "prompt_npy_wrong_shape": Case(_with_prompt(np.zeros((PROMPT_LENGTH, 16), np.float32)), 1,
                                   "shape (5, 16)"),
    "prompt_npy_wrong_dtype": Case(_with_prompt(np.zeros((PROMPT_LENGTH, EMBED), np.int32)), 1,
                                   "int32"),
    "prompt_npy_nan": Case(_with_prompt(np.full((PROMPT_LENGTH, EMBED), np.nan, np.float32)), 1,
                           "NaN"),
    "initial_checkpoint_missing": Case(_simple("--gin.INITIAL_CHECKPOINT_PATH='/no/such/model'"),
                                       1, "INITIAL_CHECKPOINT_PATH /no/such/model does not exist"),
    "safetensors_truncated": Case(_with_model(_truncate), 1, "model.safetensors"),
    "config_json_misfit": Case(_with_model(_wrong_config), 1, "config.json"),
    "resume_other_prompt_length": Case(_resume("--gin.PROMPT_LENGTH=7"), 1,
                                       "the checkpoint has shape (5, 32), the model (7, 32)"),
    "resume_other_prompt_placement": Case(_resume("--gin.ModelSpec.prompt_placement='suffix'"),
                                          1, "placement 'prefix' vs 'suffix'"),
    "resume_other_method": Case(_resume("--gin_file=gin/methods/prefix_tuning.gin"), 1,
                                "prefix"),
    "resume_other_base_model": Case(_resume(model="tiny"), 1, "base model"),
    "tsv_empty": Case(_with_tsv(b""), 1, "is empty"),
    "tsv_no_label_column": Case(_with_tsv(b"text\tstars\nthe film was great\t5\n"), 1,
                                "no column 'label'"),
    "tsv_label_outside_class_labels": Case(
        _with_tsv(("text\tlabel\n" + _good_rows() + "the film was fine\tneutral\n").encode()),
        1, "'neutral', which is not one of the labels"),
    "tsv_not_utf8": Case(_with_tsv(b"text\tlabel\nthe film was \xff\xfe great\tpositive\n"), 1,
                         "not valid UTF-8"),
    "inputs_too_long_truncated_once": Case(_long_inputs, 0, "truncated",
                                           after=_truncation_said_once, line="warning:"),
    "model_dir_unwritable": Case(_unwritable, 1, "MODEL_DIR"),
    "model_dir_is_a_file": Case(_model_dir_is_file, 1, "MODEL_DIR"),
    "batch_size_indivisible": Case(_simple("--gin.BATCH_SIZE=6"), 1,
                                   "BATCH_SIZE 6 does not divide"),
    "unknown_task": Case(_simple("--gin.MIXTURE_OR_TASK_NAME='no_such_task'"), 1, "no_such_task"),
    "nan_loss": Case(_nan_setup, 1, "loss is nan at step 6", after=_nan_stopped),
    "sigint": Case(_signal_setup(signal.SIGINT), 130, "stopped by SIGINT", after=_saved_on_signal),
    "sigterm": Case(_signal_setup(signal.SIGTERM), 143, "stopped by SIGTERM",
                    after=_saved_on_signal),
    "kill9_during_checkpoint_write": Case(_half_written_checkpoint, 0, "",
                                          after=_resumed_from_last_complete, line=""),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(workdir, tmp_path, name):
  case = CASES[name]
  argv = case.setup(workdir, tmp_path)
  before = _files(tmp_path)
  try:
    code, out, err = _train(argv)
  finally:
    locked = tmp_path / "locked"
    if locked.exists():
      subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
      os.chmod(locked, 0o755)
  assert code == case.code, err[-3000:]
  assert "Traceback" not in err and "In call to configurable" not in err, err[-3000:]
  if case.line:
    lines = [l for l in err.splitlines() if l.startswith(case.line)]
    assert len(lines) == 1, err[-3000:]
    assert case.phrase in lines[0], lines[0]
    print(f"{name}: exit {code}: {lines[0]}")  # pytest -rP shows each case's line
  if case.after is None:
    assert _files(tmp_path) == before, "the refused run changed files"
  else:
    case.after(tmp_path, out, err)
