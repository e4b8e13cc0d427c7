"""load_base_model: a checkpoint's own config wins; a preset beside it must describe it."""
import pytest

from prompt_tuning.models import get_config
from prompt_tuning.scripts.make_random_model import write_random_model
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
