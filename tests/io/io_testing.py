"""Test helpers: tiny random transformers T5s, an independent HF -> T5X name mapping, and
comparisons of parameter trees."""
import json
import re

import numpy as np
import torch
import transformers

from prompt_tuning.io.params import flatten

# Sizes chosen so no two dimensions coincide: a transposed or swapped tensor cannot fit.
_SIZES = dict(vocab_size=40, d_model=16, d_kv=6, num_heads=2, d_ff=24, num_layers=2,
              num_decoder_layers=3, relative_attention_num_buckets=8,
              relative_attention_max_distance=20, dropout_rate=0.0, layer_norm_epsilon=1e-6)


def tiny_hf_model(kind: str, seed: int = 0) -> transformers.T5ForConditionalGeneration:
  """A random T5 1.0 (`'t5_1_0'`: relu, tied, scaled) or T5.1.1 (`'t5_1_1'`: gated-gelu,
  separate `lm_head`, unscaled), every weight random so no two tensors are alike."""
  if kind == "t5_1_0":
    config = transformers.T5Config(feed_forward_proj="relu", **_SIZES)
  elif kind == "t5_1_1":
    config = transformers.T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                   **_SIZES)
  else:
    raise ValueError(kind)
  torch.manual_seed(seed)
  model = transformers.T5ForConditionalGeneration(config).eval()
  if kind == "t5_1_1":
    # transformers 5 ties lm_head to shared whatever the config says; untie it by hand.
    model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.shared.weight))
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name.endswith("layer_norm.weight"):
        param.copy_(1.0 + 0.2 * torch.randn_like(param))
      else:
        param.copy_(0.3 * torch.randn_like(param))
  return model


def hf_state(model) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


# Written out by hand from transformers' T5 module names, independently of prompt_tuning.io.hf.
_RULES = [
    (r"shared\.weight", "token_embedder/embedding", False),
    (r"(encoder|decoder)\.block\.0\.layer\.0\.SelfAttention\.relative_attention_bias\.weight",
     r"\1/relpos_bias/rel_embedding", True),
    (r"encoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight",
     r"encoder/layers_\1/pre_attention_layer_norm/scale", False),
    (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.q\.weight",
     r"encoder/layers_\1/attention/query/kernel", True),
    (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.k\.weight",
     r"encoder/layers_\1/attention/key/kernel", True),
    (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.v\.weight",
     r"encoder/layers_\1/attention/value/kernel", True),
    (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.o\.weight",
     r"encoder/layers_\1/attention/out/kernel", True),
    (r"encoder\.block\.(\d+)\.layer\.1\.layer_norm\.weight",
     r"encoder/layers_\1/pre_mlp_layer_norm/scale", False),
    (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.(wi|wi_0|wi_1|wo)\.weight",
     r"encoder/layers_\1/mlp/\2/kernel", True),
    (r"encoder\.final_layer_norm\.weight", "encoder/encoder_norm/scale", False),
    (r"decoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight",
     r"decoder/layers_\1/pre_self_attention_layer_norm/scale", False),
    (r"decoder\.block\.(\d+)\.layer\.1\.layer_norm\.weight",
     r"decoder/layers_\1/pre_cross_attention_layer_norm/scale", False),
    (r"decoder\.block\.(\d+)\.layer\.2\.layer_norm\.weight",
     r"decoder/layers_\1/pre_mlp_layer_norm/scale", False),
    (r"decoder\.block\.(\d+)\.layer\.0\.SelfAttention\.q\.weight",
     r"decoder/layers_\1/self_attention/query/kernel", True),
    (r"decoder\.block\.(\d+)\.layer\.0\.SelfAttention\.k\.weight",
     r"decoder/layers_\1/self_attention/key/kernel", True),
    (r"decoder\.block\.(\d+)\.layer\.0\.SelfAttention\.v\.weight",
     r"decoder/layers_\1/self_attention/value/kernel", True),
    (r"decoder\.block\.(\d+)\.layer\.0\.SelfAttention\.o\.weight",
     r"decoder/layers_\1/self_attention/out/kernel", True),
    (r"decoder\.block\.(\d+)\.layer\.1\.EncDecAttention\.q\.weight",
     r"decoder/layers_\1/encoder_decoder_attention/query/kernel", True),
    (r"decoder\.block\.(\d+)\.layer\.1\.EncDecAttention\.k\.weight",
     r"decoder/layers_\1/encoder_decoder_attention/key/kernel", True),
    (r"decoder\.block\.(\d+)\.layer\.1\.EncDecAttention\.v\.weight",
     r"decoder/layers_\1/encoder_decoder_attention/value/kernel", True),
    (r"decoder\.block\.(\d+)\.layer\.1\.EncDecAttention\.o\.weight",
     r"decoder/layers_\1/encoder_decoder_attention/out/kernel", True),
    (r"decoder\.block\.(\d+)\.layer\.2\.DenseReluDense\.(wi|wi_0|wi_1|wo)\.weight",
     r"decoder/layers_\1/mlp/\2/kernel", True),
    (r"decoder\.final_layer_norm\.weight", "decoder/decoder_norm/scale", False),
    (r"lm_head\.weight", "decoder/logits_dense/kernel", True),
]


def our_name(hf_name: str):
  """`(path in our tree, transposed)` for a transformers tensor name, or None if unmapped."""
  for pattern, target, transposed in _RULES:
    if re.fullmatch(pattern, hf_name):
      return re.sub(pattern, target, hf_name), transposed
  return None


def hf_logits(model, encoder_tokens: np.ndarray, decoder_tokens: np.ndarray) -> np.ndarray:
  """Teacher-forced logits, token 0 in the encoder input masked as padding."""
  enc = torch.tensor(encoder_tokens)
  with torch.no_grad():
    out = model(input_ids=enc, attention_mask=(enc > 0).long(),
                decoder_input_ids=torch.tensor(decoder_tokens))
  return out.logits.numpy()


def example_tokens(vocab_size: int, seed: int = 0):
  """A padded batch of encoder tokens and decoder inputs starting with 0."""
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, vocab_size, size=(2, 7))
  enc[1, 5:] = 0
  dec = rng.integers(2, vocab_size, size=(2, 5))
  dec[:, 0] = 0
  return enc, dec


def assert_trees_equal(actual, expected):
  """Same paths, bit-identical arrays."""
  a, b = flatten(actual), flatten(expected)
  assert a.keys() == b.keys()
  for key in b:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def edit_config(folder, **changes):
  """Sets keys of `folder/config.json`; a value of None removes the key."""
  path = folder / "config.json"
  config = json.loads(path.read_text())
  for key, value in changes.items():
    if value is None:
      config.pop(key, None)
    else:
      config[key] = value
  path.write_text(json.dumps(config))
