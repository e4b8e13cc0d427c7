"""`load_pretrained` format detection, `validate_params`, and the errors bad input gets."""
import json
import shutil

import jax
import numpy as np
import pytest
from flax import linen as nn
from safetensors.numpy import load_file, save_file

import prompt_tuning.io as io_lib
from io_testing import edit_config, tiny_hf_model
from prompt_tuning.io import CheckpointError, load_pretrained, validate_params
from prompt_tuning.io.params import expected_shapes, flatten, unflatten
from prompt_tuning.models.config import T5Config

CONFIG = T5Config(vocab_size=40, emb_dim=16, num_heads=2, head_dim=6, mlp_dim=24,
                  num_encoder_layers=2, num_decoder_layers=3, relative_attention_num_buckets=8)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
  folder = tmp_path_factory.mktemp("hf") / "t5_1_1"
  tiny_hf_model("t5_1_1").save_pretrained(folder)
  return folder


@pytest.fixture
def hf_copy(hf_folder, tmp_path):
  """A copy of `hf_folder` that a test may break."""
  return shutil.copytree(hf_folder, tmp_path / "copy")


def _zeros(config):
  return unflatten({p: np.zeros(s, np.float32) for p, s in expected_shapes(config).items()})


@pytest.mark.parametrize("config", [CONFIG, CONFIG.replace(mlp_activations=("relu",),
                                                          logits_via_embedding=True)])
def test_expected_shapes_match_the_flax_model(config):
  """Our idea of the tree is the model's: same paths, same shapes."""
  from prompt_tuning.models.network import T5
  shapes = jax.eval_shape(lambda: T5(config).init_params(jax.random.PRNGKey(0)))
  model = {p: tuple(v.shape) for p, v in flatten(nn.unbox(shapes)).items()}
  assert model == expected_shapes(config)


def test_model_init_params_are_valid_and_writable(tmp_path):
  """`init` returns params boxed with logical axes; validation and writing unbox them."""
  from prompt_tuning.models.network import T5
  params = T5(CONFIG).init_params(jax.random.PRNGKey(0))
  validate_params(CONFIG, params)
  io_lib.write_hf_checkpoint(tmp_path / "w", CONFIG, params)
  config, read = load_pretrained(tmp_path / "w")
  assert config == CONFIG
  np.testing.assert_array_equal(read["token_embedder"]["embedding"],
                                nn.unbox(params)["token_embedder"]["embedding"])


def test_load_pretrained_reads_hf_folders(hf_folder):
  config, params = load_pretrained(hf_folder)
  assert config.num_decoder_layers == 3 and "logits_dense" in params["decoder"]
  from prompt_tuning.models import load_pretrained as models_load
  assert models_load(hf_folder)[0] == config


def test_validate_params_accepts_a_fitting_tree():
  validate_params(CONFIG, _zeros(CONFIG))


def test_validate_params_reports_every_problem():
  flat = flatten(_zeros(CONFIG))
  del flat["decoder/layers_2/mlp/wo/kernel"], flat["encoder/encoder_norm/scale"]
  flat["encoder/layers_0/mlp/wi/kernel"] = np.zeros((16, 24))
  flat["decoder/layers_0/self_attention/query/kernel"] = np.zeros((12, 16))
  with pytest.raises(CheckpointError) as info:
    validate_params(CONFIG, unflatten(flat))
  message = str(info.value)
  assert "2 missing tensor(s)" in message
  assert "decoder/layers_2/mlp/wo/kernel" in message and "encoder/encoder_norm/scale" in message
  assert "1 unexpected tensor(s):\n  encoder/layers_0/mlp/wi/kernel" in message
  assert ("decoder/layers_0/self_attention/query/kernel: shape (12, 16), config implies "
          "(16, 12)") in message


def test_validate_params_rejects_the_variables_dict():
  with pytest.raises(CheckpointError, match="variables\\['params'\\]"):
    validate_params(CONFIG, {"params": _zeros(CONFIG)})


def test_missing_path(tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    load_pretrained(tmp_path / "nowhere")


def test_folder_in_no_known_format(tmp_path):
  (tmp_path / "weights.pt").write_bytes(b"")
  with pytest.raises(CheckpointError) as info:
    load_pretrained(tmp_path)
  message = str(info.value)
  assert "not a checkpoint we can read" in message
  assert "config.json" in message and "checkpoint_<step>" in message and "weights.pt" in message


def test_a_plain_file_is_not_a_checkpoint(tmp_path):
  (tmp_path / "model.safetensors").write_bytes(b"")
  with pytest.raises(CheckpointError, match="is a file; pass the checkpoint folder"):
    load_pretrained(tmp_path / "model.safetensors")


def test_another_architecture_is_not_a_t5(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(
      {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 16}))
  with pytest.raises(CheckpointError, match="'bert' model, not a T5"):
    load_pretrained(tmp_path)


def test_config_json_without_safetensors(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(CheckpointError, match="neither model.safetensors nor .*safe_serialization"):
    load_pretrained(tmp_path)


def test_broken_config_json(tmp_path):
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(CheckpointError, match="config.json"):
    load_pretrained(tmp_path)


def test_weights_that_do_not_fit_the_config(hf_copy):
  edit_config(hf_copy, d_ff=20)
  with pytest.raises(CheckpointError,
                     match=r"encoder\.block\.0\.layer\.1\.DenseReluDense\.wi_0\.weight .*"
                           r"has shape \(24, 16\), but config.json implies \(20, 16\)"):
    load_pretrained(hf_copy)


def test_missing_tensors_are_listed(hf_copy):
  state = load_file(str(hf_copy / "model.safetensors"))
  gone = ["decoder.final_layer_norm.weight", "encoder.block.1.layer.0.SelfAttention.k.weight"]
  save_file({k: v for k, v in state.items() if k not in gone},
            str(hf_copy / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(CheckpointError) as info:
    load_pretrained(hf_copy)
  message = str(info.value)
  assert "lacks 2 tensor(s)" in message
  assert all(name in message for name in gone)
  assert "encoder/layers_1/attention/key/kernel" in message


def test_unexpected_tensors_are_listed(hf_copy):
  state = load_file(str(hf_copy / "model.safetensors"))
  state["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"] = np.zeros(
      (8, 2), np.float32)
  save_file(state, str(hf_copy / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(CheckpointError,
                     match="(?s)1 tensor.*does not have.*encoder.block.1.layer.0.SelfAttention"):
    load_pretrained(hf_copy)


def test_unsupported_feed_forward(hf_copy):
  edit_config(hf_copy, feed_forward_proj="gated-mish")
  with pytest.raises(CheckpointError, match="feed_forward_proj 'gated-mish' is not supported"):
    load_pretrained(hf_copy)


def test_orbax_folder_points_at_the_hook(tmp_path):
  (tmp_path / "_CHECKPOINT_METADATA").write_text("{}")
  with pytest.raises(CheckpointError, match="orbax.*register_format"):
    load_pretrained(tmp_path)


def test_registered_format_is_used_and_validated(tmp_path, monkeypatch):
  monkeypatch.setattr(io_lib, "_FORMATS", list(io_lib._FORMATS))
  (tmp_path / "ours.marker").write_text("")
  io_lib.register_format("ours", lambda p: (p / "ours.marker").exists(),
                         lambda p: (CONFIG, _zeros(CONFIG)))
  config, params = load_pretrained(tmp_path)
  assert config == CONFIG and params["decoder"]["logits_dense"]["kernel"].shape == (16, 40)
  io_lib.register_format("bad", lambda p: True, lambda p: (CONFIG, {}))
  with pytest.raises(CheckpointError, match="missing tensor"):
    load_pretrained(tmp_path)
