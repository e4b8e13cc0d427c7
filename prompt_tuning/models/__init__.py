"""T5 in Flax Linen with logical axis names, checkpoint loading and cached decoding."""
from prompt_tuning.models.config import PRESETS, T5Config, get_config


def load_pretrained(path):
  """Loads a Hugging Face or T5X checkpoint directory: returns `(T5Config, params)`."""
  from prompt_tuning.io import load_pretrained as _load  # io depends on models, not the reverse.
  return _load(path)
