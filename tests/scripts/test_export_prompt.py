"""export_prompt: the prompt of a checkpoint to .npy without the model; one-line errors."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from prompt_tuning.scripts import export_prompt
from prompt_tuning.train import checkpoints, optimizers
from prompt_tuning.train.state import TrainState

PROMPTS = {3: np.random.RandomState(3).randn(5, 16).astype(np.float32),
           8: np.random.RandomState(8).randn(5, 16).astype(np.float32)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A run with checkpoints 3 and 8, written from a 2-device mesh (sharded prompt)."""
  path = tmp_path_factory.mktemp("run")
  mesh = jax.make_mesh((2,), ("model",), devices=jax.devices()[:2])
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "model"))
  ckpt = checkpoints.Checkpointer(path, async_save=False)
  for step, prompt in PROMPTS.items():
    params = {"encoder_prompt": {"prompt": jax.device_put(prompt, sharding)}}
    ckpt.save(step, TrainState.create(params, optimizers.adafactor()), step)
  ckpt.close()
  return path


def _cli(*args):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run([sys.executable, "-m", "prompt_tuning.scripts.export_prompt", *args],
                        capture_output=True, text=True, env=env, timeout=120)


def test_cli_exports_the_latest_prompt_on_one_device(model_dir, tmp_path):
  out = tmp_path / "prompt.npy"
  result = _cli(f"--checkpoint_dir={model_dir}", f"--output={out}")
  assert result.returncode == 0, result.stderr
  assert str(out) in result.stdout and "(5, 16)" in result.stdout and "step 8" in result.stdout
  np.testing.assert_array_equal(np.load(out), PROMPTS[8])


def test_cli_error_is_one_line_and_nonzero(tmp_path):
  result = _cli(f"--checkpoint_dir={tmp_path / 'nowhere'}", f"--output={tmp_path / 'p.npy'}")
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "does not exist" in lines[0], result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "p.npy").exists()


@pytest.mark.parametrize("where", ["checkpoints", "checkpoints/3"])
def test_step_from_folder_or_flag(model_dir, tmp_path, capsys, where):
  out = tmp_path / "p.npy"
  argv = [f"--checkpoint_dir={model_dir / where}", f"--output={out}"]
  if where == "checkpoints":
    argv.append("--step=3")
  assert export_prompt.main(argv) == 0
  np.testing.assert_array_equal(np.load(out), PROMPTS[3])


def _error(capsys, argv) -> str:
  assert export_prompt.main(argv) == 1
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  return err


def test_errors(model_dir, tmp_path, capsys):
  out = f"--output={tmp_path / 'p.npy'}"
  err = _error(capsys, [f"--checkpoint_dir={model_dir}", "--step=5", out])
  assert "step 5 does not exist" in err and "[3, 8]" in err
  err = _error(capsys, [f"--checkpoint_dir={model_dir / 'checkpoints' / '3'}", "--step=8", out])
  assert "is checkpoint step 3 but step 8 was asked for" in err
  (tmp_path / "empty").mkdir()
  assert "no checkpoint found" in _error(capsys, [f"--checkpoint_dir={tmp_path / 'empty'}", out])
  err = _error(capsys, [f"--checkpoint_dir={model_dir}",
                        f"--output={tmp_path / 'missing' / 'p.npy'}"])
  assert "does not exist" in err
  # A full-model checkpoint holds no prompt.
  full = tmp_path / "full"
  ckpt = checkpoints.Checkpointer(full, async_save=False)
  params = {"token_embedder": {"embedding": np.ones((8, 4), np.float32)}}
  ckpt.save(1, TrainState.create(params, optimizers.adafactor()), 0)
  ckpt.close()
  err = _error(capsys, [f"--checkpoint_dir={full}", out])
  assert "holds no prompt" in err and "token_embedder" in err
  assert not (tmp_path / "p.npy").exists()
