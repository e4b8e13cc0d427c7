"""A few prompt-tuning steps on a mesh, run by each process of a multi-process job.

    python multihost_worker.py OUT.npz [PORT PROCESS_ID NUM_PROCESSES]

With a port, the process joins a `jax.distributed` job on 127.0.0.1 (CPU collectives
are gloo, jax's default) and feeds only its share of a fixed global batch; without,
it is the single-process reference on its local devices. `run_layouts` returns, per
mesh layout, the loss of each step, the final prompt and the batch as placed.
"""
from __future__ import annotations

import os
import sys
import traceback

import jax
import numpy as np

NUM_STEPS = 3
BATCH_SIZE = 8
INPUT_LENGTH, TARGET_LENGTH = 12, 5
PROMPT_LENGTH = 4
# name -> (mesh shape, whether the `model` axis pairs devices of different processes).
LAYOUTS = {"data_across": ((4, 2), False), "model_across": ((4, 2), True)}


def global_batch() -> dict[str, np.ndarray]:
  rng = np.random.RandomState(0)
  shape = lambda length: (BATCH_SIZE, length)
  return {"encoder_input_tokens": rng.randint(2, 128, shape(INPUT_LENGTH)).astype(np.int32),
          "decoder_input_tokens": rng.randint(2, 128, shape(TARGET_LENGTH)).astype(np.int32),
          "decoder_target_tokens": rng.randint(2, 128, shape(TARGET_LENGTH)).astype(np.int32)}


def _devices(interleave: bool) -> list:
  """All devices by process; interleaved so that neighbours belong to different processes."""
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  if not interleave or jax.process_count() == 1:
    return devices
  per_process = [[d for d in devices if d.process_index == p] for p in range(jax.process_count())]
  return [d for group in zip(*per_process) for d in group]


def _local_rows(batch: dict[str, np.ndarray], model_across: bool) -> dict[str, np.ndarray]:
  """This process's share: its slice of the examples, or all when `data` is within processes."""
  if jax.process_count() == 1 or model_across:
    return batch
  share = BATCH_SIZE // jax.process_count()
  start = jax.process_index() * share
  return {k: v[start:start + share] for k, v in batch.items()}


def run_layouts() -> dict[str, np.ndarray]:
  import flax.linen as nn
  from jax.experimental import multihost_utils

  from prompt_tuning.models import get_config
  from prompt_tuning.models.network import T5
  from prompt_tuning.prompts import from_sampled_vocab, init_prompt_params, prompted_t5
  from prompt_tuning.train import optimizers, partitioning
  from prompt_tuning.train import step as step_lib
  from prompt_tuning.train.state import PROMPT_ONLY

  config = get_config("tiny", dropout_rate=0.0)
  frozen = nn.meta.unbox(T5(config).init_params(jax.random.PRNGKey(0)))
  model = prompted_t5(config, PROMPT_LENGTH, from_sampled_vocab(50))
  prompt = nn.meta.unbox(init_prompt_params(model, frozen, jax.random.PRNGKey(1)))
  batch = global_batch()
  results = {"process_count": np.asarray(jax.process_count())}
  for name, (shape, model_across) in LAYOUTS.items():
    mesh = partitioning.make_mesh(shape, _devices(model_across))
    program = step_lib.build(model, optimizers.adafactor(), mesh,
                             step_lib.abstract_params(model), PROMPT_ONLY)
    state, frozen_placed = program.init_state(prompt, frozen)
    placed = program.place_batch(_local_rows(batch, model_across))
    losses = []
    for _ in range(NUM_STEPS):
      state, metrics = program.train_step(state, frozen_placed, placed)
      losses.append(float(metrics["loss"]))
    results[f"{name}/loss"] = np.asarray(losses)
    results[f"{name}/prompt"] = np.asarray(state.params["encoder_prompt"]["prompt"])
    results[f"{name}/placed_inputs"] = multihost_utils.process_allgather(
        placed["encoder_input_tokens"], tiled=True)
  return results


def main(argv: list[str]) -> None:
  out = argv[1]
  if len(argv) > 2:
    from prompt_tuning.train import partitioning
    port, process_id, num_processes = map(int, argv[2:5])
    partitioning.initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id)
  results = run_layouts()
  np.savez(out, **results)
  if jax.process_count() > 1:
    jax.distributed.shutdown()


if __name__ == "__main__":
  try:
    main(sys.argv)
  except BaseException:  # exit at once: jax.distributed's exit hook would wait for the peers
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)
