"""`python -m prompt_tuning.infer --gin_file=configs/prompt_infer.gin ...`: predictions as JSONL.

A base checkpoint plus a prompt (`PROMPT_FILE`, or a run's `MODEL_DIR`) decode every
example of `MIXTURE_OR_TASK_NAME`'s `INFER_SPLIT`, or each line of `INPUT_FILE`, and
write `{"index", "inputs", "prediction"[, "target"]}` lines to `OUTPUT_FILE`.
"""
import json
import os
import sys
from typing import Mapping, Optional, Sequence

import gin
import jax
import numpy as np

from prompt_tuning import gin_utils


@gin.configurable
def infer(output_file: str = gin.REQUIRED, model=gin.REQUIRED,
          task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          mixture_or_task_name=None, split: str = "validation",
          input_file: Optional[str] = None, model_dir: Optional[str] = None,
          prompt_file: Optional[str] = None, batch_size: int = 32,
          mesh_shape: Sequence[int] = (-1, 1), max_examples: Optional[int] = None) -> str:
  import seqio
  from prompt_tuning.data import task_vocabulary
  from prompt_tuning.io.files import atomic_file
  from prompt_tuning.models import decoding
  from prompt_tuning.train import optimizers, trainer
  from prompt_tuning.train.step import LossConfig, merge_params
  if not model_dir and not prompt_file:
    raise ValueError("set PROMPT_FILE (a method's .npy/.npz export) or MODEL_DIR (a run's checkpoints)")
  if (mixture_or_task_name is None) == (input_file is None):
    raise ValueError("set exactly one of MIXTURE_OR_TASK_NAME and INPUT_FILE")
  vocab = task_vocabulary()
  in_len, out_len = task_feature_lengths["inputs"], task_feature_lengths["targets"]
  if input_file:
    if not os.path.isfile(input_file):
      raise FileNotFoundError(f"INPUT_FILE {input_file} does not exist")
    with open(input_file, encoding="utf-8") as f:
      examples = [{"inputs": line.rstrip("\n")} for line in f if line.strip()]
  else:
    name = trainer.task_name(mixture_or_task_name, model)
    task = seqio.get_mixture_or_task(name)
    ds = task.get_dataset({"inputs": in_len, "targets": out_len}, split=split, shuffle=False)
    examples = [{"inputs": ex["inputs_pretokenized"].decode(),
                 "target": ex["targets_pretokenized"].decode()}
                for ex in ds.as_numpy_iterator()]
  examples = examples[:max_examples] if max_examples else examples
  run = trainer.set_up(model_dir or "", model, optimizers.adafactor(), mesh_shape, batch_size,
                       in_len, LossConfig(enable_dropout=False), restore=not prompt_file,
                       export_file=prompt_file,
                       for_training=False)
  params = merge_params(run.frozen, run.state.params)
  method = model.tuning_method  # its encoding of inputs: a template's slots
  with atomic_file(output_file) as out:
    for start in range(0, len(examples), batch_size):
      chunk = examples[start:start + batch_size]
      tokens = np.zeros((batch_size, in_len), np.int32)
      for row, ex in enumerate(chunk):
        ids = (method.encode_inputs(vocab, ex["inputs"]) if method
               else list(vocab.encode(ex["inputs"])))[:in_len - 1] + [1]
        tokens[row, :len(ids)] = ids
      batch = run.program.place_batch({"encoder_input_tokens": tokens})
      with run.program.context():
        predicted, _ = decoding.generate(run.model, params, batch["encoder_input_tokens"],
                                         max_decode_length=out_len)
      predicted = np.asarray(jax.device_get(predicted))  # one transfer per batch
      for row, ex in enumerate(chunk):
        ids = predicted[row].tolist()
        ids = ids[:ids.index(1)] if 1 in ids else ids
        record = {"index": start + row, "inputs": ex["inputs"],
                  "prediction": vocab.decode([i for i in ids if i > 0])}
        if "target" in ex:
          record["target"] = ex["target"]
        out.write((json.dumps(record) + "\n").encode("utf-8"))
  print(f"wrote {len(examples)} predictions to {output_file}", flush=True)
  return output_file


def main(argv=None) -> int:
  return gin_utils.run(lambda: infer(), argv, prog="prompt_tuning.infer",
                       retain_freed_host_memory=True)


if __name__ == "__main__":
  sys.exit(main())
