"""P-tuning as a Method: the prompt encoder against PEFT's (torch), placement, export."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning.io import CheckpointError
from prompt_tuning.methods import PromptTuning, PTuning, detect, from_description
from prompt_tuning.methods.p_tuning import encode_prompt
from prompt_tuning.models.network import T5

LENGTH, HIDDEN = 5, 12
SLOT = 60  # the fixture (conftest.py) draws input ids below it


def _trained(method, config, params, seed=1):
  model = method.build_model(config)
  return model, nn.meta.unbox(method.init_params(model, params, jax.random.PRNGKey(seed)))


def _peft_reference(tree, encoder: str, width: int):
  """PEFT's PromptEncoder (torch's nn.LSTM and Linear) holding the same weights."""
  torch = pytest.importorskip("torch")
  from peft import PromptEncoderConfig  # pylint: disable=import-outside-toplevel
  from peft.tuners.p_tuning.model import PromptEncoder  # pylint: disable=import-outside-toplevel
  config = PromptEncoderConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=LENGTH,
                               token_dim=width, encoder_hidden_size=HIDDEN,
                               encoder_reparameterization_type=encoder.upper(),
                               num_transformer_submodules=1, encoder_dropout=0.0)
  ref = PromptEncoder(config).double()
  t = lambda a: torch.tensor(np.asarray(a, np.float64))
  with torch.no_grad():
    ref.embedding.weight.copy_(t(tree["virtual_tokens"]))
    if encoder == "lstm":
      for i in range(2):
        for direction, suffix in (("forward", ""), ("backward", "_reverse")):
          part = tree["lstm"][f"layers_{i}"][direction]
          getattr(ref.lstm_head, f"weight_ih_l{i}{suffix}").copy_(t(part["input_kernel"]).T)
          getattr(ref.lstm_head, f"weight_hh_l{i}{suffix}").copy_(t(part["hidden_kernel"]).T)
          getattr(ref.lstm_head, f"bias_ih_l{i}{suffix}").copy_(t(part["bias"]))
          getattr(ref.lstm_head, f"bias_hh_l{i}{suffix}").zero_()
    linears = [m for m in ref.mlp_head if isinstance(m, torch.nn.Linear)]
    assert len(linears) == len(tree["mlp"])
    for i, linear in enumerate(linears):
      linear.weight.copy_(t(tree["mlp"][f"layers_{i}"]["kernel"]).T)
      linear.bias.copy_(t(tree["mlp"][f"layers_{i}"]["bias"]))
    return ref(torch.arange(LENGTH)[None]).numpy()[0]


@pytest.mark.parametrize("encoder", ["lstm", "mlp"])
def test_prompt_encoder_equals_peft_and_torch(frozen, encoder):
  config, params, *_ = frozen
  _, tree = _trained(PTuning(LENGTH, encoder, HIDDEN), config, params)
  assert ("lstm" in tree["encoder_prompt"]) == (encoder == "lstm")
  tree = jax.tree.map(lambda a: np.asarray(a) * 3.0, tree["encoder_prompt"])  # larger weights: the gates saturate
  want = _peft_reference(tree, encoder, config.emb_dim)
  got = np.asarray(encode_prompt(tree, encoder))
  assert got.shape == (LENGTH, config.emb_dim)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_template_placement_writes_the_prompt_over_the_slots_in_order(frozen):
  config, params, _, dec = frozen
  method = PTuning(4, "mlp", HIDDEN, template="[P:2] {inputs} [P:2] so", slot_id=SLOT)
  assert method.placement == "template" and method.settings()["slot_id"] == SLOT
  model, tree = _trained(method, config, params)
  tokens = np.array([[SLOT, SLOT, 5, 6, 7, SLOT, SLOT, 9, 1, 0, 0],
                     [SLOT, SLOT, 5, SLOT, SLOT, 9, 1, 0, 0, 0, 0]], np.int32)
  x, mask = model.apply({"params": {**params, **tree}}, tokens, method=T5.prompted_inputs)
  prompt = np.asarray(encode_prompt(tree["encoder_prompt"], "mlp"))
  table = np.asarray(params["token_embedder"]["embedding"])
  rows = {0: [0, 1, 5, 6], 1: [0, 1, 3, 4]}
  for b, slots in rows.items():
    for k, position in enumerate(slots):
      np.testing.assert_allclose(np.asarray(x[b, position]), prompt[k], atol=1e-6)
    for position in set(range(tokens.shape[1])) - set(slots):
      np.testing.assert_array_equal(np.asarray(x[b, position]), table[tokens[b, position]])
  np.testing.assert_array_equal(np.asarray(mask), tokens > 0)
  # The export, read back as a fixed prompt, computes the same logits.
  want = model.apply({"params": {**params, **tree}}, tokens, dec[:, :3])
  loaded_model, loaded = method.load(method.export(jax.device_get(tree), config), config, "p")
  got = loaded_model.apply({"params": {**params, **loaded}}, tokens, dec[:, :3])
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


@pytest.mark.parametrize("placement", ["prefix", "suffix"])
def test_export_is_the_encoders_output_and_plain_prompt_tuning_reads_it(frozen, placement):
  config, params, enc, dec = frozen
  method = PTuning(LENGTH, "lstm", HIDDEN, placement=placement)
  model, tree = _trained(method, config, params)
  arrays = method.export(jax.device_get(tree), config)
  assert list(arrays) == ["prompt"] and arrays["prompt"].shape == (LENGTH, config.emb_dim)
  np.testing.assert_array_equal(arrays["prompt"],
                                np.asarray(encode_prompt(tree["encoder_prompt"], "lstm")))
  want = model.apply({"params": {**params, **tree}}, enc, dec)
  plain = PromptTuning(LENGTH, placement=placement)
  sidecar = method.sidecar(config, "abc", 7)
  assert sidecar["method"] == "p_tuning" and sidecar["readers"] == ["prompt_tuning"]
  plain.check_sidecar(sidecar, config, "abc", "prompt.npy")
  plain_model, plain_params = plain.load(arrays, config, "prompt.npy")
  got = plain_model.apply({"params": {**params, **plain_params}}, enc, dec)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_method_round_trips_and_is_detected(frozen):
  config, params, *_ = frozen
  method = PTuning(4, "lstm", HIDDEN, template="{inputs} It was [P:4]", slot_id=SLOT)
  assert from_description(method.describe()) == method
  _, tree = _trained(method, config, params)
  assert detect(tree) is PTuning
  assert PTuning.from_params(tree).encoder == "lstm"
  with pytest.raises(CheckpointError, match="p_tuning"):
    PromptTuning(4).check_sidecar(method.sidecar(config, None), config, None, "t.npy")


@pytest.mark.parametrize("kwargs, words", [
    (dict(encoder="gru"), "PROMPT_ENCODER 'gru'"),
    (dict(length=5, template="[P:2] {inputs}", slot_id=SLOT), "has 2 prompt slots"),
    (dict(placement="template"), "needs a template"),
    (dict(length=2, placement="suffix", template="[P:2] {inputs}", slot_id=SLOT),
     "the template places the prompt"),
    (dict(length=2, template="[P:2] sentence", slot_id=SLOT), "shows no field"),
])
def test_bad_settings_say_what_to_change(kwargs, words):
  with pytest.raises(ValueError, match=words):
    PTuning(**kwargs)
