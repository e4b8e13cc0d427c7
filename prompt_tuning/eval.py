"""`python -m prompt_tuning.eval --gin_file=configs/prompt_eval.gin ...`: metrics of a prompt.

The prompt comes from the latest (or `CHECKPOINT_STEP`) checkpoint in `MODEL_DIR`, or
from `PROMPT_FILE` when that is set. With `--gin.ModelSpec.mode="'full'"` and neither,
the base model is evaluated as it is, with no prompt: its zero-shot accuracy. Prints one line per metric, e.g. `accuracy: 0.8123`,
and writes them to `<MODEL_DIR>/eval_<split>.json` when there is a MODEL_DIR.
"""
import json
import os
import sys
from typing import Mapping, Optional, Sequence

import gin

from prompt_tuning import gin_utils


@gin.configurable
def evaluate(mixture_or_task_name=gin.REQUIRED,
             task_feature_lengths: Mapping[str, int] = gin.REQUIRED, model=gin.REQUIRED,
             model_dir: Optional[str] = None, batch_size: int = 32,
             eval_split: str = "validation", checkpoint_step: Optional[int] = None,
             prompt_file: Optional[str] = None, mesh_shape: Sequence[int] = (-1, 1),
             eval_examples: Optional[int] = None) -> dict:
  from prompt_tuning.train import optimizers, trainer
  from prompt_tuning.train.step import LossConfig
  zero_shot = model.mode == "full" and not model_dir
  if not model_dir and not prompt_file and not zero_shot:
    raise ValueError("set MODEL_DIR (a run's checkpoints) or PROMPT_FILE (a method's "
                     ".npy/.npz export), or ModelSpec.mode = 'full' to evaluate the base "
                     "model alone")
  name = trainer.task_name(mixture_or_task_name, model)
  run = trainer.set_up(model_dir or "", model, optimizers.adafactor(), mesh_shape, batch_size,
                       task_feature_lengths["inputs"], LossConfig(enable_dropout=False),
                       restore_step=checkpoint_step, restore=not (prompt_file or zero_shot),
                       export_file=prompt_file,
                       for_training=False, vocab_size=trainer.task_vocab_size(name))
  evaluators = trainer.make_evaluators(run, name, eval_split, task_feature_lengths,
                                       batch_size, eval_examples)
  results = trainer.evaluate_all(run, evaluators, int(run.state.step))
  if model_dir:
    with open(os.path.join(model_dir, f"eval_{eval_split}.json"), "w", encoding="utf-8") as f:
      json.dump({"step": int(run.state.step), **results}, f, indent=1)
  if run.checkpointer:
    run.checkpointer.close()
  return results


def main(argv=None) -> int:
  return gin_utils.run(lambda: evaluate(), argv, prog="prompt_tuning.eval",
                       retain_freed_host_memory=True)


if __name__ == "__main__":
  sys.exit(main())
