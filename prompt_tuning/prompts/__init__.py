"""The trainable part of prompt tuning: prompt modules, placements and initialisers."""
from prompt_tuning.prompts.combine import after_bos, get_combine_fn, prefix, suffix
from prompt_tuning.prompts.initializers import (from_array, from_class_labels, from_file,
                                                from_sampled_vocab, from_string, from_uniform)
from prompt_tuning.prompts.prompt import (Prompt, check_prompt_budget, init_prompt_params,
                                         prompted_t5)
