"""PEFT interop against PEFT itself: our prompt as a PEFT adapter gives our logits in
PyTorch, a PEFT-trained adapter gives PEFT's logits here, and PEFT's T5 prefix tuning
does what the refusal to export prefixes says it does."""
import dataclasses
import json
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from prompt_tuning.io import (CheckpointError, fingerprint, load_export,  # noqa: E402
                              load_pretrained)
from prompt_tuning.io import peft as peft_io  # noqa: E402
from prompt_tuning.methods import PrefixTuning  # noqa: E402
from prompt_tuning.methods.prompt_tuning import PromptTuning  # noqa: E402
from prompt_tuning.prompts.initializers import from_peft  # noqa: E402
from prompt_tuning.scripts import export_prompt  # noqa: E402
from prompt_tuning.scripts.make_random_model import write_random_model  # noqa: E402
from prompt_tuning.train import checkpoints, optimizers  # noqa: E402
from prompt_tuning.train.state import TrainState  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
LENGTH = 5
# A padded batch: row 1 ends in encoder padding (0), row 2 in decoder padding.
ENC = np.array([[5, 6, 7, 8, 9, 10, 1], [11, 12, 1, 0, 0, 0, 0], [13, 14, 15, 16, 1, 0, 0]])
DEC = np.array([[0, 3, 4, 5, 6], [0, 7, 8, 1, 0], [0, 9, 1, 0, 0]])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """`(base HF folder, run dir)`: a tiny random base written by our HF writer, and a run
  dir as training leaves it (checkpoint, config.json, config.gin) holding a prompt
  trained on that base for a few gradient steps of our model."""
  root = tmp_path_factory.mktemp("peft")
  base = root / "base"
  write_random_model(str(base), "tiny", seed=0)
  config, params = load_pretrained(base)
  method = PromptTuning(length=LENGTH)
  model = method.build_model(config)

  def loss(prompt):
    logits = model.apply({"params": {**params, "encoder_prompt": {"prompt": prompt}}},
                         jnp.asarray(ENC), jnp.asarray(DEC))
    logp = jax.nn.log_softmax(logits[:, :-1])
    return -jnp.take_along_axis(logp, jnp.asarray(DEC[:, 1:, None]), -1).mean()

  grad = jax.jit(jax.grad(loss))
  prompt = jnp.asarray(params["token_embedder"]["embedding"][10:10 + LENGTH])
  for _ in range(3):
    prompt = prompt - 0.5 * grad(prompt)
  run = root / "run"
  ckpt = checkpoints.Checkpointer(run, async_save=False)
  ckpt.save(3, TrainState.create({"encoder_prompt": {"prompt": np.asarray(prompt)}},
                                 optimizers.adafactor()), 3)
  ckpt.close()
  checkpoints.save_model_config(run, config, {"mode": "prompt", "method": method.describe(),
                                              "frozen_fingerprint": fingerprint(params)})
  # As the trainer's write_gin_config records it.
  (run / "config.gin").write_text(f"INITIAL_CHECKPOINT_PATH = '{base}'\n\n"
                                  "ModelSpec.initial_checkpoint_path = "
                                  "%INITIAL_CHECKPOINT_PATH\n")
  return base, run


def test_recorded_base_model(tmp_path):
  (tmp_path / "config.gin").write_text(
      "INITIAL_CHECKPOINT_PATH = @embedded_model_path()\n"
      "embedded_model_path.name = 't5_multitask'\n"
      "ModelSpec.initial_checkpoint_path = %INITIAL_CHECKPOINT_PATH\n")
  assert export_prompt.recorded_base_model(tmp_path) == str(
      REPO / "prompt_tuning" / "assets" / "t5_multitask")
  (tmp_path / "config.gin").write_text("ModelSpec.initial_checkpoint_path = '~/t5'\n")
  assert export_prompt.recorded_base_model(tmp_path) == str(pathlib.Path("~/t5").expanduser())
  (tmp_path / "config.gin").write_text("ModelSpec.prompt_length = 5\n")
  assert export_prompt.recorded_base_model(tmp_path) is None


def _ours(base, prompt):
  config, params = load_pretrained(base)
  model, prompt_params = PromptTuning(length=prompt.shape[0]).load(
      {"prompt": prompt}, config, "test prompt")
  return np.asarray(model.apply({"params": {**params, **prompt_params}}, jnp.asarray(ENC),
                                jnp.asarray(DEC)))


def _torch_logits(model):
  enc = torch.tensor(ENC)
  with torch.no_grad():
    return model(input_ids=enc, attention_mask=(enc > 0).long(),
                 decoder_input_ids=torch.tensor(DEC)).logits.numpy()


def _hf(base):
  return transformers.T5ForConditionalGeneration.from_pretrained(str(base)).eval()


def test_exported_prompt_gives_our_logits_in_peft(trained, tmp_path, capsys):
  base, run = trained
  out = tmp_path / "adapter"
  assert export_prompt.main([f"--checkpoint_dir={run}", f"--output={out}",
                             "--format=peft"]) == 0
  assert "PEFT prompt-tuning adapter" in capsys.readouterr().out
  config = json.loads((out / "adapter_config.json").read_text())
  # The base comes from the run's recorded INITIAL_CHECKPOINT_PATH.
  assert config["base_model_name_or_path"] == str(base.resolve())
  assert (config["peft_type"], config["task_type"], config["num_transformer_submodules"],
          config["num_virtual_tokens"]) == ("PROMPT_TUNING", "SEQ_2_SEQ_LM", 1, LENGTH)
  _, arrays, _ = checkpoints.read_export(run)
  prompt = arrays["prompt"]
  np.testing.assert_array_equal(load_file(str(out / "adapter_model.safetensors"))[
      "prompt_embeddings"], prompt)

  ours = _ours(base, prompt)
  loaded = peft.PeftModel.from_pretrained(_hf(base), str(out)).eval()
  theirs = _torch_logits(loaded)
  assert np.abs(theirs - _torch_logits(_hf(base))).max() > 1e-2  # the prompt matters
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


def _peft_trained_adapter(base, path, submodules=None, steps=3):
  """A PEFT prompt-tuning adapter trained a few Adam steps in PyTorch, saved to `path`."""
  torch.manual_seed(0)
  kwargs = {} if submodules is None else {"num_transformer_submodules": submodules}
  model = peft.get_peft_model(_hf(base), peft.PromptTuningConfig(
      task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4, **kwargs))
  model.train()
  params = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.Adam(params, lr=0.1)
  enc = torch.tensor(ENC)
  for _ in range(steps):
    loss = model(input_ids=enc, attention_mask=(enc > 0).long(),
                 labels=torch.tensor(DEC[:, 1:])).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
  model.save_pretrained(str(path))
  return model.eval()


@pytest.mark.parametrize("submodules", [None, 1])  # None: PEFT's seq2seq default, 2
def test_peft_trained_adapter_gives_peft_logits_here(trained, tmp_path, submodules):
  base, _ = trained
  model = _peft_trained_adapter(base, tmp_path / "adapter", submodules)
  saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
  rows = saved["prompt_embeddings"].shape[0]
  assert rows == (2 * 4 if submodules is None else 4)
  theirs = _torch_logits(model)
  config, params = load_pretrained(base)
  embedding = params["token_embedder"]["embedding"]
  prompt = np.asarray(from_peft(str(tmp_path / "adapter"))(jax.random.PRNGKey(0),
                                                           (4, config.emb_dim), embedding))
  np.testing.assert_array_equal(prompt, saved["prompt_embeddings"][:4])  # the encoder half
  np.testing.assert_allclose(_ours(base, prompt), theirs, rtol=0, atol=1e-4)
  # PROMPT_FILE (eval, infer) reads the folder as the same prompt.
  arrays, sidecar = load_export(tmp_path / "adapter")
  assert sidecar is None
  np.testing.assert_array_equal(arrays[""], prompt)


def test_import_errors(trained, tmp_path):
  base, _ = trained
  _peft_trained_adapter(base, tmp_path / "adapter", steps=0)
  init = from_peft(str(tmp_path / "adapter"))
  rng = jax.random.PRNGKey(0)
  with pytest.raises(CheckpointError, match="is 32 wide but the model's embedding is 48 wide"):
    init(rng, (4, 48), None)
  with pytest.raises(ValueError, match="holds 4 virtual tokens .* set PROMPT_LENGTH = 4"):
    init(rng, (6, 32), None)
  peft.get_peft_model(_hf(base), peft.PrefixTuningConfig(
      task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3)).save_pretrained(str(tmp_path / "prefix"))
  with pytest.raises(CheckpointError, match="is a PEFT PREFIX_TUNING adapter, not PROMPT_TUNING"):
    from_peft(str(tmp_path / "prefix"))(rng, (3, 32), None)
  with pytest.raises(CheckpointError, match="does not exist"):
    from_peft(str(tmp_path / "nowhere"))(rng, (3, 32), None)


def _error(capsys, argv) -> str:
  assert export_prompt.main(argv) == 1
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  return err


def test_export_errors(trained, tmp_path, capsys):
  base, run = trained
  # A base of another shape than the run's.
  other = tmp_path / "other"
  other.mkdir()
  hf_config = json.loads((base / "config.json").read_text())
  (other / "config.json").write_text(json.dumps({**hf_config, "d_model": 4}))
  (other / "model.safetensors").write_bytes(b"")  # only its config is read
  err = _error(capsys, [f"--checkpoint_dir={run}", f"--output={tmp_path / 'a'}",
                        "--format=peft", f"--base_model={other}"])
  assert "is not the model the prompt was trained on" in err and "d_model 4 vs 32" in err
  assert not (tmp_path / "a").exists()
  # The run's shape, other weights.
  write_random_model(str(tmp_path / "same_shape"), "tiny", seed=1)
  err = _error(capsys, [f"--checkpoint_dir={run}", f"--output={tmp_path / 'a'}",
                        "--format=peft", f"--base_model={tmp_path / 'same_shape'}"])
  assert "has the run's shape but other weights" in err
  # A prompt placed after the inputs: PEFT only prepends.
  config, _ = load_pretrained(base)
  suffix_run = tmp_path / "suffix_run"
  ckpt = checkpoints.Checkpointer(suffix_run, async_save=False)
  prompt = np.ones((LENGTH, config.emb_dim), np.float32)
  ckpt.save(1, TrainState.create({"encoder_prompt": {"prompt": prompt}},
                                 optimizers.adafactor()), 0)
  ckpt.close()
  checkpoints.save_model_config(suffix_run, config, {"mode": "prompt", "method": PromptTuning(
      length=LENGTH, placement="suffix").describe()})
  err = _error(capsys, [f"--checkpoint_dir={suffix_run}", f"--output={tmp_path / 'a'}",
                        "--format=peft", f"--base_model={base}"])
  assert "placement 'suffix'" in err and not (tmp_path / "a").exists()
  # A prefix-tuning run: every kind is refused, with its reason.
  prefix_run = tmp_path / "prefix_run"
  method = PrefixTuning(length=2, reparameterize=False)
  shape = (2, config.num_heads, config.head_dim)
  tree = {kind: {f"layers_{i}": {"key": np.ones(shape, np.float32),
                                 "value": np.ones(shape, np.float32)} for i in range(2)}
          for kind in ("encoder", "decoder", "cross")}
  ckpt = checkpoints.Checkpointer(prefix_run, async_save=False)
  ckpt.save(1, TrainState.create({"kv_prefixes": tree}, optimizers.adafactor()), 0)
  ckpt.close()
  checkpoints.save_model_config(prefix_run, config, {"mode": "prompt",
                                                     "method": method.describe()})
  err = _error(capsys, [f"--checkpoint_dir={prefix_run}", f"--output={tmp_path / 'b'}",
                        "--format=peft", f"--base_model={base}"])
  assert "PEFT cannot express this prefix-tuning run's attention kinds encoder, decoder, cross" in err
  assert "relative position bias" in err and "--format=numpy" in err
  assert not (tmp_path / "b").exists()


def test_peft_t5_prefix_tuning_is_what_the_refusal_says(trained):
  """PEFT 0.21's T5 prefix tuning: no encoder prefix, an empty cross-attention cache, and
  decoder self-attention prefixes with relative position bias over positions 0..p-1.
  With that bias zeroed over the prefix, PEFT's logits are our decoder prefix's: the bias
  is the whole difference. If PEFT changes any of this, this test fails and the refusal
  (`io.peft.PREFIX_KINDS_PEFT_LACKS`) should be revisited."""
  base, _ = trained
  torch.manual_seed(1)
  model = peft.get_peft_model(_hf(base), peft.PrefixTuningConfig(
      task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3)).eval()
  cache = model.get_prompt(1)
  assert cache.cross_attention_cache.get_seq_length() == 0
  config, params = load_pretrained(base)
  arrays = {}
  for i, layer in enumerate(cache.self_attention_cache.layers):
    arrays[f"decoder/layers_{i}/key"] = layer.keys[0].permute(1, 0, 2).detach().numpy()
    arrays[f"decoder/layers_{i}/value"] = layer.values[0].permute(1, 0, 2).detach().numpy()
  ours_model, prefixes = PrefixTuning(3, attention=("decoder",), reparameterize=False).load(
      arrays, config, "PEFT's prefixes")
  ours = np.asarray(ours_model.apply({"params": {**params, **prefixes}}, jnp.asarray(ENC),
                                     jnp.asarray(DEC)))
  theirs = _torch_logits(model)
  assert np.abs(ours - theirs).max() > 1e-3  # the position bias PEFT adds and we do not
  attention = model.get_base_model().decoder.block[0].layer[0].SelfAttention
  original = attention.compute_bias

  def zero_over_prefix(*args, **kwargs):
    bias = original(*args, **kwargs).clone()
    bias[..., :3] = 0.0
    return bias

  attention.compute_bias = zero_over_prefix
  try:
    unbiased = _torch_logits(model)
  finally:
    attention.compute_bias = original
  np.testing.assert_allclose(ours, unbiased, rtol=0, atol=1e-4)
  # The encoder sees no prefix: its output in PEFT's forward is the base model's.
  enc = torch.tensor(ENC)
  with torch.no_grad():
    encoded = model(input_ids=enc, attention_mask=(enc > 0).long(),
                    decoder_input_ids=torch.tensor(DEC)).encoder_last_hidden_state
    plain = _hf(base).encoder(input_ids=enc, attention_mask=(enc > 0).long())
  np.testing.assert_allclose(encoded.numpy(), plain.last_hidden_state.numpy(), rtol=0,
                             atol=1e-6)


def test_prompt_init_macro_selects_the_peft_adapter(tmp_path):
  """`--gin.PROMPT_INIT="@from_peft()"` over a recipe that set another initialiser."""
  import gin
  from prompt_tuning import gin_utils
  from prompt_tuning.train.trainer import ModelSpec
  prompt = np.arange(6 * 8, dtype=np.float32).reshape(6, 8) / 10
  from prompt_tuning.models import get_config
  config = dataclasses.replace(get_config("tiny"), emb_dim=8)
  peft_io.write_peft_prompt(str(tmp_path / "adapter"), prompt, config, base_model="base")
  try:
    gin_utils.configure(["configs/quickstart.gin"], [
        "MODEL_DIR = '/unused'", "PROMPT_INIT = @from_peft()",
        f"from_peft.path = '{tmp_path / 'adapter'}'"], [])
    spec = ModelSpec()
  finally:
    gin.clear_config()
  np.testing.assert_array_equal(np.asarray(spec.prompt_init(None, (6, 8))), prompt)
