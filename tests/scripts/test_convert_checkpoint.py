"""convert_checkpoint: one of our full-model runs to a folder transformers loads."""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers

from prompt_tuning.data.vocab import default_vocab_path
from prompt_tuning.models import get_config
from prompt_tuning.models.network import T5
from prompt_tuning.scripts import convert_checkpoint
from prompt_tuning.train import checkpoints, optimizers
from prompt_tuning.train.state import TrainState

CONFIG = get_config("tiny", dropout_rate=0.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A pretraining-style run (every weight trained) with checkpoints 2 and 5."""
  path = tmp_path_factory.mktemp("pretrain")
  checkpoints.save_model_config(path, CONFIG, {"mode": "full"})
  ckpt = checkpoints.Checkpointer(path, async_save=False)
  params = {}
  for step in (2, 5):
    params[step] = nn.meta.unbox(T5(CONFIG).init_params(jax.random.PRNGKey(step)))
    ckpt.save(step, TrainState.create(params[step], optimizers.adafactor()), step)
  ckpt.close()
  return path, {k: jax.tree.map(np.asarray, v) for k, v in params.items()}


def _cli(*args):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run([sys.executable, "-m", "prompt_tuning.scripts.convert_checkpoint",
                         *args], capture_output=True, text=True, env=env, timeout=300)


def _tokens():
  rng = np.random.default_rng(0)
  enc = rng.integers(2, CONFIG.vocab_size, size=(2, 9))
  enc[1, 6:] = 0
  dec = rng.integers(2, CONFIG.vocab_size, size=(2, 5))
  dec[:, 0] = 0
  return enc, dec


@pytest.mark.parametrize("dtype,where,step,subprocess_cli", [
    ("bfloat16", "", 5, True), ("float32", "checkpoints/2", 2, False)])
def test_transformers_loads_the_converted_run(model_dir, tmp_path, capsys, dtype, where, step,
                                              subprocess_cli):
  path, params = model_dir
  out = tmp_path / "hf"
  argv = [f"--input={path / where}", f"--output={out}", f"--dtype={dtype}"]
  if subprocess_cli:
    result = _cli(*argv)
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
  else:
    assert convert_checkpoint.main(argv + ["--dropout_rate=0.1"]) == 0
    assert str(out) in capsys.readouterr().out
  assert json.loads((out / "config.json").read_text())["dropout_rate"] == (
      CONFIG.dropout_rate if subprocess_cli else 0.1)
  assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors",
                                                    "spiece.model"]
  assert (out / "spiece.model").read_bytes() == open(default_vocab_path(), "rb").read()

  model = transformers.T5ForConditionalGeneration.from_pretrained(out, dtype=torch.float32)
  enc, dec = _tokens()
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0).long(),
                   decoder_input_ids=torch.tensor(dec)).logits.numpy()
  # The weights the checkpoint holds, rounded as the file stores them.
  stored = params[step] if dtype == "float32" else jax.tree.map(
      lambda x: x.astype(ml_dtypes.bfloat16).astype(np.float32), params[step])
  ours = np.asarray(T5(CONFIG).apply({"params": stored}, enc, dec))
  assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(ours).max()
  # And a different step's weights give different logits: the step was honoured.
  other = np.asarray(T5(CONFIG).apply({"params": params[7 - step]}, enc, dec))
  assert np.abs(other - theirs).max() > 1e-2 * np.abs(ours).max()

  tokenizer = transformers.T5Tokenizer.from_pretrained(out)
  assert tokenizer.decode(tokenizer("a movie review").input_ids,
                          skip_special_tokens=True) == "a movie review"


def test_refuses_to_overwrite_and_reports_bad_input_in_one_line(model_dir, tmp_path, capsys):
  path, _ = model_dir
  out = tmp_path / "hf"
  out.mkdir()
  assert convert_checkpoint.main([f"--input={path}", f"--output={out}"]) == 1
  err = capsys.readouterr().err
  assert err.startswith("convert_checkpoint: error:") and "already exists" in err
  assert len(err.strip().splitlines()) == 1 and not list(out.iterdir())
  assert convert_checkpoint.main([f"--input={tmp_path / 'nowhere'}",
                                  f"--output={tmp_path / 'x'}"]) == 1
  err = capsys.readouterr().err
  assert "does not exist" in err and len(err.strip().splitlines()) == 1
  assert not (tmp_path / "x").exists()
  assert convert_checkpoint.main([f"--input={path}", f"--output={tmp_path / 'x'}",
                                  "--dropout_rate=1.5"]) == 1
  assert "dropout_rate must be in [0, 1)" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()
