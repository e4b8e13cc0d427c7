"""A few prompt-tuning steps on a tiny random T5, exported as `.npy`: the golden run.

`tests/methods/data/prompt_tuning_golden.npy` was written by this run with the code
before the `Method` seam existed (commit 89856aa); `test_prompt_tuning.py` reruns it and
requires the same bytes. Regenerate only for an intended change of behaviour:

    python tests/methods/golden_prompt_tuning.py tests/methods/data/prompt_tuning_golden.npy
"""
import pathlib
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # this checkout first

SEED, STEPS, PROMPT_LENGTH = 3, 4, 6
BATCH_SIZE, INPUT_LENGTH, TARGET_LENGTH = 8, 12, 4


def batches(vocab_size: int, steps: int):
  rng = np.random.RandomState(SEED)
  for _ in range(steps):
    tokens = lambda n: rng.randint(2, vocab_size, (BATCH_SIZE, n)).astype(np.int32)
    targets = tokens(TARGET_LENGTH)
    targets[:, -1] = 0  # some padding
    inputs = tokens(INPUT_LENGTH)
    inputs[: BATCH_SIZE // 2, -3:] = 0
    decoder_inputs = np.concatenate([np.zeros((BATCH_SIZE, 1), np.int32), targets[:, :-1]], 1)
    yield {"encoder_input_tokens": inputs, "decoder_input_tokens": decoder_inputs,
           "decoder_target_tokens": targets}


def train_and_export(workdir, output) -> np.ndarray:
  """Trains `STEPS` steps into `workdir/run`, then exports its prompt to `output`."""
  from prompt_tuning.prompts import from_sampled_vocab
  from prompt_tuning.scripts import export_prompt
  from prompt_tuning.scripts.make_random_model import write_random_model
  from prompt_tuning.train import optimizers, trainer
  from prompt_tuning.train.step import LossConfig
  workdir = pathlib.Path(workdir)
  write_random_model(str(workdir / "model"), "tiny", seed=SEED)
  spec = trainer.ModelSpec(initial_checkpoint_path=str(workdir / "model"),
                           prompt_length=PROMPT_LENGTH, prompt_init=from_sampled_vocab(100),
                           dropout_rate=0.1)
  run = trainer.set_up(str(workdir / "run"), spec, optimizers.adafactor(), (-1, 1),
                       BATCH_SIZE, INPUT_LENGTH, LossConfig(), seed=SEED)
  state = run.state
  for batch in batches(run.config.vocab_size, STEPS):
    state, _ = run.program.train_step(state, run.frozen, run.program.place_batch(batch))
  run.checkpointer.save(STEPS, state, STEPS)
  run.checkpointer.close()
  if export_prompt.main([f"--checkpoint_dir={workdir / 'run'}", f"--output={output}"]):
    raise RuntimeError("export_prompt failed")
  return np.load(output)


if __name__ == "__main__":
  with tempfile.TemporaryDirectory() as tmp:
    print(train_and_export(tmp, sys.argv[1]).shape)
