"""Cached greedy decoding under two XLA compile settings, alternating in one process.

  python scripts/bench_decode.py --json=decode_ab.json
  python scripts/bench_decode.py --preset=t5_1_1_mini --prompt=20
  python scripts/bench_decode.py --program=train_step   # the prompt-tuning step instead
  python scripts/bench_decode.py --retain_freed_host_memory   # as prompt_tuning.infer runs

`prompt_tuning.models.decoding.generate` is compiled twice for the same model, prompt and
inputs: once with XLA's defaults (A) and once with `--options` as per-compilation
options (B; default: YNNPACK fusions off, `xla_cpu_experimental_ynn_fusion_type=""`).
Each round times one call of each, A B then B A, after 0.2 s of idle; the report is the
median time of each and the median of the per-round B / A ratios, and whether both
emitted the same tokens. Weights are random and T5-scaled, as in `benchmark.py`.

`--program=train_step` times the prompt-tuning train step of `benchmark.py` (the same
batch, `--targets` target tokens) the same way; both compilations step one state in
turn, and the report gives the difference between the losses of their first steps
from the same state.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from statistics import median

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(SCRIPTS), SCRIPTS]

YNN_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}


def run(args) -> dict:
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  from bench_workers import _random_params
  from prompt_tuning.models import decoding, get_config
  from prompt_tuning.prompts import prompted_t5
  from prompt_tuning.train import step as step_lib

  if args.retain_freed_host_memory:
    from prompt_tuning import host_memory
    host_memory.retain_freed_memory()
  if args.program == "train_step":
    return _run_train_step(args)
  cfg = get_config(args.preset, dropout_rate=0.0, dtype="float32")
  model = prompted_t5(cfg, args.prompt)
  params = jax.tree.map(jnp.asarray, _random_params(
      nn.meta.unbox(step_lib.abstract_params(model)), cfg.head_dim))
  rng = np.random.RandomState(1)
  tokens = jnp.asarray(rng.randint(2, cfg.vocab_size, (args.batch, args.inputs)), jnp.int32)
  lowered = decoding.generate.lower(model, params, tokens, max_decode_length=args.new_tokens,
                                    eos_id=-1)  # never stop early: always N tokens
  compiled = {"A": lowered.compile(), "B": lowered.compile(compiler_options=args.options)}
  emitted = {name: np.asarray(fn(params, tokens)[0]) for name, fn in compiled.items()}
  seconds = _alternate(args, lambda name: jax.block_until_ready(compiled[name](params, tokens)))
  return {"program": "generate",
          "shape": {"preset": args.preset, "batch": args.batch, "inputs": args.inputs,
                    "prompt": args.prompt, "new_tokens": args.new_tokens},
          **_summary(args, seconds),
          "same_tokens": bool(np.array_equal(emitted["A"], emitted["B"])),
          "device": jax.devices()[0].device_kind}


def _alternate(args, call) -> dict:
  """`{"A": [s, ...], "B": [...]}`: `call(name)` timed `args.rounds` times each, A B then
  B A, after `args.gap` idle seconds."""
  seconds = {"A": [], "B": []}
  for r in range(args.rounds):
    for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
      time.sleep(args.gap)
      t0 = time.perf_counter()
      call(name)
      seconds[name].append(time.perf_counter() - t0)
  return seconds


def _summary(args, seconds: dict) -> dict:
  ratios = [b / a for a, b in zip(seconds["A"], seconds["B"])]
  return {"options_b": args.options, "rounds": args.rounds,
          "retain_freed_host_memory": args.retain_freed_host_memory,
          "seconds_a": median(seconds["A"]), "seconds_b": median(seconds["B"]),
          "b_over_a": median(ratios), "ratios": ratios}


def _run_train_step(args) -> dict:
  """The A/B of `benchmark.py`'s prompt-tuning step."""
  import jax
  from bench_workers import JaxTrain
  side = JaxTrain({"device": "cpu", "preset": args.preset, "dtype": "float32",
                   "prompt": args.prompt, "batch": args.batch, "length": args.inputs,
                   "targets": args.targets})
  program, state = side.program, side.state
  with program.context():
    lowered = program.jit_train_step.lower(state, side.frozen, side.batch)
    compiled = {"A": lowered.compile(), "B": lowered.compile(compiler_options=args.options)}
  # The state is donated: each compilation's first step starts from its own copy.
  losses = {}
  for name in ("A", "B"):
    start = jax.tree.map(lambda x: x.copy(), state)
    _, metrics = compiled[name](start, side.frozen, side.batch)
    losses[name] = float(metrics["loss"])
  def step(name):  # each call steps the state the previous call left
    nonlocal state
    state, metrics = compiled[name](state, side.frozen, side.batch)
    jax.block_until_ready((state, metrics))
  seconds = _alternate(args, step)
  return {"program": "train_step",
          "shape": {"preset": args.preset, "batch": args.batch, "inputs": args.inputs,
                    "prompt": args.prompt, "targets": args.targets},
          **_summary(args, seconds), "losses": losses,
          "loss_difference": abs(losses["A"] - losses["B"]),
          "device": jax.devices()[0].device_kind}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="t5_1_1_small")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--inputs", type=int, default=128)
  parser.add_argument("--prompt", type=int, default=100)
  parser.add_argument("--program", choices=("generate", "train_step"), default="generate")
  parser.add_argument("--new_tokens", type=int, default=32)
  parser.add_argument("--targets", type=int, default=16, help="train_step's target tokens")
  parser.add_argument("--rounds", type=int, default=10)
  parser.add_argument("--gap", type=float, default=0.2, help="idle seconds before each call")
  parser.add_argument("--options", type=json.loads, default=YNN_OFF,
                      help="B's XLA compile options as JSON (default: YNNPACK fusions off)")
  parser.add_argument("--retain_freed_host_memory", action="store_true",
                      help="glibc malloc keeps freed memory, as prompt_tuning.infer does")
  parser.add_argument("--json", help="write the report here")
  args = parser.parse_args(argv)
  if args.rounds < 1:
    parser.error("--rounds must be >= 1")
  report = run(args)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)
  if args.program == "generate":
    what = f"{args.new_tokens} new tokens"
    check = f"same tokens: {report['same_tokens']}"
  else:
    what = f"{args.targets} targets, prompt-tuning step"
    check = f"first-step losses differ by {report['loss_difference']:.2e}"
  print(f"{args.preset}, batch {args.batch}, {args.inputs} inputs + {args.prompt} prompt, "
        f"{what}: A {report['seconds_a']:.3f} s, B {report['seconds_b']:.3f} s, "
        f"B / A {report['b_over_a']:.3f} (median of {args.rounds} rounds); {check}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
