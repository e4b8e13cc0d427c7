"""load_base_model: a checkpoint's own config wins; a preset beside it must describe it.
set_up: a whole model resuming from its checkpoint is not initialised first."""
import dataclasses

import jax
import numpy as np
import pytest

from prompt_tuning.models import get_config
from prompt_tuning.models.network import T5
from prompt_tuning.scripts.make_random_model import write_random_model
from prompt_tuning.train import optimizers, step as step_lib, trainer
from prompt_tuning.train.trainer import ModelSpec, load_base_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
  return write_random_model(str(tmp_path_factory.mktemp("m") / "tiny"), "tiny")


@pytest.mark.parametrize("preset", [None, "tiny"])
def test_a_checkpoint_with_or_without_its_preset(tiny_model, preset):
  config, params = load_base_model(ModelSpec(initial_checkpoint_path=tiny_model, preset=preset),
                                   vocab_size=8100)
  tiny = get_config("tiny")
  assert (config.emb_dim, config.num_encoder_layers) == (tiny.emb_dim, tiny.num_encoder_layers)
  assert params["token_embedder"]["embedding"].shape == (8192, tiny.emb_dim)


def test_a_preset_that_does_not_describe_the_checkpoint_is_refused(tiny_model):
  mini, tiny = get_config("t5_1_1_mini"), get_config("tiny")
  with pytest.raises(ValueError, match=rf"'t5_1_1_mini' does not describe the checkpoint .*"
                                       rf"emb_dim {mini.emb_dim} vs {tiny.emb_dim}.*drop the"):
    load_base_model(ModelSpec(initial_checkpoint_path=tiny_model, preset="t5_1_1_mini"))


def _set_up(model_dir, spec):
  return trainer.set_up(str(model_dir), spec, optimizers.adafactor(), (-1, 1), batch_size=8,
                        input_length=16, loss_config=step_lib.LossConfig(), vocab_size=8100)


@pytest.mark.parametrize("from_checkpoint", [False, True])
def test_a_whole_model_resumes_without_a_fresh_init(tiny_model, tmp_path, monkeypatch,
                                                    from_checkpoint):
  spec = (ModelSpec(initial_checkpoint_path=tiny_model, mode="full") if from_checkpoint
          else ModelSpec(preset="tiny", mode="full"))
  run = _set_up(tmp_path, spec)
  saved = run.state.replace(step=run.state.step + 5,
                            params=jax.tree.map(lambda x: x + 1, run.state.params))
  run.checkpointer.save(5, saved, data_position=5)
  run.checkpointer.close()

  def refuse(*args, **kwargs):
    raise AssertionError("a resumed whole model was initialised before its checkpoint was read")
  monkeypatch.setattr(T5, "init_params", refuse)
  monkeypatch.setattr(step_lib.TrainProgram, "init_state", refuse)
  resumed = _set_up(tmp_path, spec)
  resumed.checkpointer.close()
  assert int(resumed.state.step) == 5 and resumed.data_position == 5
  assert resumed.frozen == {}
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(resumed.state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_set_up_that_fails_on_restore_closes_its_checkpointer(tiny_model, tmp_path,
                                                              monkeypatch):
  short = ModelSpec(initial_checkpoint_path=tiny_model, prompt_length=4)
  run = _set_up(tmp_path, short)
  run.checkpointer.save(1, run.state, data_position=1)
  run.checkpointer.close()
  closed = []
  monkeypatch.setattr(trainer.checkpoints.Checkpointer, "close",
                      lambda self: closed.append(self.model_dir))
  with pytest.raises(trainer.checkpoints.CheckpointError):
    _set_up(tmp_path, dataclasses.replace(short, prompt_length=8))
  assert closed == [tmp_path]
