"""The trainable part of prompt tuning: prompt modules, placements and initialisers."""
from prompt_tuning.prompts.combine import after_bos, get_combine_fn, prefix, suffix
from prompt_tuning.prompts.initializers import (from_array, from_class_labels, from_file,
                                                from_sampled_vocab, from_string, from_uniform)
from prompt_tuning.prompts.prompt import Prompt, check_prompt_budget


def __getattr__(name):
  """`prompted_t5` and `init_prompt_params` moved to `prompt_tuning.methods.prompt_tuning`;
  they stay importable from here (lazily: methods imports this package)."""
  if name in ("prompted_t5", "init_prompt_params"):
    from prompt_tuning.methods import prompt_tuning as _method
    return getattr(_method, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
