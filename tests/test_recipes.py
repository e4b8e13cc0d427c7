"""The shipped recipes run as written: quickstart, pretraining, then LM adaptation.

They read the real offline corpora (prepared once into the cache, see
`scripts/prepare_data.py`) and run a handful of steps of the embedded model or a tiny one.
"""
import json

import numpy as np
import pytest

from prompt_tuning.assets import embedded_model_path
from prompt_tuning.data import corpora
from prompt_tuning.models import load_pretrained
from prompt_tuning.scripts.make_random_model import write_random_model
from prompt_tuning.train import checkpoints
from test_workflow import _run


@pytest.fixture(scope="module")
def prepared():
  corpora.prepare(["rotten_tomatoes", "prose"], verbose=False)


def test_quickstart_recipe_runs_on_the_embedded_model(prepared, tmp_path):
  model_dir = tmp_path / "run"
  out = _run("prompt_tuning.train", [
      "--gin_file=configs/quickstart.gin", f"--gin.MODEL_DIR='{model_dir}'",
      "--gin.TRAIN_STEPS=6", "--gin.EVAL_PERIOD=6", "--gin.CHECKPOINT_PERIOD=3"]).stdout
  line = [l for l in out.splitlines()
          if l.startswith("rotten_tomatoes_rank_classification/accuracy: ")]
  assert len(line) == 1
  accuracy = float(line[0].split(": ")[1])
  # Two labels, 1278 validation snippets: any accuracy is a fraction of them.
  assert 0.0 < accuracy < 1.0
  config, _ = load_pretrained(embedded_model_path("t5_multitask"))
  assert checkpoints.load_model_config(model_dir)[0] == config
  assert np.load(model_dir / "prompts" / "step_6.npy").shape == (20, config.emb_dim)


def test_quickstart_recipe_on_a_model_of_yours(prepared, tmp_path):
  model = write_random_model(str(tmp_path / "model"), "tiny")
  model_dir = tmp_path / "run"
  _run("prompt_tuning.train", [
      "--gin_file=configs/quickstart.gin", f"--gin.MODEL_DIR='{model_dir}'",
      f"--gin.INITIAL_CHECKPOINT_PATH='{model}'", "--gin.TRAIN_STEPS=3",
      "--gin.EVAL_PERIOD=None", "--gin.CHECKPOINT_PERIOD=3"])
  assert np.load(model_dir / "prompts" / "step_3.npy").shape == (20, 32)


def test_multitask_recipe_trains_the_whole_model_on_the_mixture(prepared, tmp_path):
  from prompt_tuning.data import multitask
  corpora.prepare(list(multitask.SOURCES), verbose=False)
  model_dir = tmp_path / "multitask"
  out = _run("prompt_tuning.train", [
      "--gin_file=configs/multitask.gin", f"--gin.MODEL_DIR='{model_dir}'",
      "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8", "--gin.CHECKPOINT_PERIOD=2"]).stdout
  assert "step 2/2  loss " in out and "trained steps 0-2" in out
  step, params = checkpoints.read_params(str(model_dir))
  _, base = load_pretrained(embedded_model_path("t5_lm_adapted"))
  assert step == 2
  # Every weight trains: the encoder's first query kernel moved off the base model's.
  moved = params["encoder"]["layers_0"]["attention"]["query"]["kernel"]
  assert not np.array_equal(np.asarray(moved, np.float32),
                            np.asarray(base["encoder"]["layers_0"]["attention"]["query"]["kernel"],
                                       np.float32))


def test_pretrain_then_lm_adaptation(prepared, tmp_path):
  pretrain, adapted = tmp_path / "pretrain", tmp_path / "adapted"
  small = ["--gin.BATCH_SIZE=8", "--gin.CHECKPOINT_PERIOD=2"]
  _run("prompt_tuning.train", [
      "--gin_file=configs/pretrain.gin", "--gin_file=gin/models/tiny.gin",
      f"--gin.MODEL_DIR='{pretrain}'", "--gin.TRAIN_STEPS=4",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}", *small])
  # The recipe saves the data iterator with each checkpoint and resumes from it.
  assert (pretrain / "checkpoints" / "4" / "data_iterator").is_dir()
  resumed = _run("prompt_tuning.train", [
      "--gin_file=configs/pretrain.gin", "--gin_file=gin/models/tiny.gin",
      f"--gin.MODEL_DIR='{pretrain}'", "--gin.TRAIN_STEPS=6",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}", *small]).stdout
  assert "resuming the data stream at batch 4 from checkpoint 4's data iterator" in resumed
  config, pretrained = load_pretrained(str(pretrain))
  assert config.vocab_size == 8192  # the package vocabulary's 8100 ids, rounded up
  _run("prompt_tuning.train", [
      "--gin_file=configs/lm_adaptation.gin", f"--gin.MODEL_DIR='{adapted}'",
      f"--gin.INITIAL_CHECKPOINT_PATH='{pretrain}'", "--gin.TRAIN_STEPS=2",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32}", *small])
  config2, adapted_params = load_pretrained(str(adapted))
  assert config2 == config
  before = pretrained["encoder"]["layers_0"]["mlp"]["wo"]["kernel"]
  after = adapted_params["encoder"]["layers_0"]["mlp"]["wo"]["kernel"]
  assert before.shape == after.shape and not np.array_equal(before, after)
  records = [json.loads(l) for l in (adapted / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(r["train/loss"]) for r in records if "train/loss" in r)


def test_lm_adaptation_on_your_own_text(prepared, tmp_path):
  # Domain adaptation: the prefix-LM recipe on the texts of a labelled TSV (labels unused).
  model = write_random_model(str(tmp_path / "model"), "tiny")
  adapted = tmp_path / "adapted"
  _run("prompt_tuning.train", [
      "--gin_file=configs/lm_adaptation.gin", f"--gin.MODEL_DIR='{adapted}'",
      f"--gin.INITIAL_CHECKPOINT_PATH='{model}'", "--gin.TRAIN_STEPS=2",
      "--gin.BATCH_SIZE=8", "--gin.CHECKPOINT_PERIOD=2",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32}",
      "--gin.MIXTURE_OR_TASK_NAME=@tsv_text_task()",
      "--gin.tsv_text_task.name='reviews_prefix_lm'",
      f"--gin.tsv_text_task.train='{corpora.corpus_path('rotten_tomatoes', 'train')}'",
      f"--gin.tsv_text_task.validation="
      f"'{corpora.corpus_path('rotten_tomatoes', 'validation')}'"])
  _, before = load_pretrained(model)
  _, after = load_pretrained(str(adapted))
  kernel = lambda p: p["decoder"]["layers_0"]["mlp"]["wo"]["kernel"]
  assert not np.array_equal(kernel(before), kernel(after))
  config = (adapted / "config.gin").read_text()
  assert "tsv_text_task.name = 'reviews_prefix_lm'" in config
