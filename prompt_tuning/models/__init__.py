"""T5 in Flax Linen with logical axis names, checkpoint loading and cached decoding.

  from prompt_tuning.models import T5, T5Config, load_pretrained
  cfg, params = load_pretrained("path/to/hf_or_t5x_checkpoint")
  logits = T5(cfg).apply({"params": params}, encoder_ids, decoder_ids, None,
                         enable_dropout=False)
"""
from prompt_tuning.models.config import PRESETS, T5Config, get_config
from prompt_tuning.models.network import T5

__all__ = ["PRESETS", "T5", "T5Config", "get_config", "load_pretrained"]


def load_pretrained(path):
  """Loads a Hugging Face or T5X checkpoint directory: returns `(T5Config, params)`."""
  from prompt_tuning.io import load_pretrained as _load  # io depends on models, not the reverse.
  return _load(path)
