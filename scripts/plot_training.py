"""Loss curves and a summary (steps, tokens seen, wall time) of training runs.

    python scripts/plot_training.py --run "span corruption=RUN1" --run "LM adaptation=RUN2" \\
        --out docs/pretraining.png [--json docs/pretraining.json]

Reads each MODEL_DIR's `metrics.jsonl` (train/loss, steps_per_sec, tokens_per_sec). A run
that was resumed logged the steps after its last checkpoint twice; the later line wins.
Tokens seen are steps x the tokens of one batch (inputs + targets, packed, padding
included); wall time is the sum of the logged step times, so restarts, compilation and
checkpoint waits are not in it. Prints the summary as a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Sequence

import numpy as np

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(SCRIPTS), SCRIPTS]
from named_arg import name_equals
from prompt_tuning.train import metrics as metrics_lib


def read_metrics(model_dir) -> list[dict]:
  """The train lines of `<model_dir>/metrics.jsonl`, one per step (the last written wins)."""
  by_step = {int(r["step"]): r for r in metrics_lib.read_metrics(str(model_dir))
             if "train/loss" in r}
  if not by_step:
    path = os.path.join(model_dir, metrics_lib.METRICS_FILE)
    raise ValueError(f"{path} has no train/loss lines")
  return [by_step[s] for s in sorted(by_step)]


def summarize(rows: Sequence[dict]) -> dict:
  """Steps, tokens seen, wall time and the final loss of one run's train lines."""
  steps = np.array([r["step"] for r in rows])
  rate = np.array([r["train/steps_per_sec"] for r in rows])
  tokens_per_batch = np.median([r["train/tokens_per_sec"] / r["train/steps_per_sec"]
                                for r in rows])
  # Each line's rate covers the steps since the line before it (the first: since the start
  # of its process, one step after a checkpoint; counted as one step's time).
  gaps = np.diff(steps, prepend=steps[0] - 1)
  seconds = float(np.sum(gaps / rate))
  last = rows[-min(5, len(rows)):]
  return {"steps": int(steps[-1]), "tokens_per_batch": int(round(tokens_per_batch)),
          "tokens_seen": int(round(steps[-1] * tokens_per_batch)),
          "train_seconds": seconds,
          "first_loss": float(rows[0]["train/loss"]),
          "final_loss": float(np.mean([r["train/loss"] for r in last])),
          "final_token_accuracy": float(np.mean([r.get("train/token_accuracy", np.nan)
                                                 for r in last]))}


def smooth(values: np.ndarray, window: int) -> np.ndarray:
  """Trailing moving average (the first points average what there is)."""
  cumulative = np.cumsum(np.insert(values, 0, 0.0))
  counts = np.minimum(np.arange(1, len(values) + 1), window)
  return (cumulative[1:] - cumulative[np.arange(len(values)) + 1 - counts]) / counts


def plot(runs: dict[str, list[dict]], out) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), squeeze=False)
  for ax, (name, rows) in zip(axes[0], runs.items()):
    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["train/loss"] for r in rows])
    ax.plot(steps, loss, color="0.75", linewidth=0.8, label="logged")
    ax.plot(steps, smooth(loss, 10), color="C0", linewidth=1.5, label="mean of 10 logs")
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (nats / target token)")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)


def markdown(summaries: dict[str, dict]) -> str:
  lines = ["| run | steps | tokens seen | train wall time | loss: first → final |",
           "|---|---:|---:|---:|---|"]
  for name, s in summaries.items():
    lines.append(f"| {name} | {s['steps']:,} | {s['tokens_seen'] / 1e6:.1f} M | "
                 f"{s['train_seconds'] / 3600:.1f} h | {s['first_loss']:.2f} → "
                 f"{s['final_loss']:.2f} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--run", action="append", required=True, metavar="NAME=MODEL_DIR",
                      type=name_equals("MODEL_DIR"))
  parser.add_argument("--out", required=True, help="the PNG to write")
  parser.add_argument("--json", default=None, help="also write the summary as JSON here")
  args = parser.parse_args(argv)
  runs = {}
  for name, model_dir in args.run:
    try:
      runs[name] = read_metrics(model_dir)
    except (OSError, ValueError) as e:
      print(f"plot_training: error: {e}", file=sys.stderr)
      return 1
  summaries = {name: summarize(rows) for name, rows in runs.items()}
  plot(runs, args.out)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(summaries, indent=2) + "\n", encoding="utf-8")
  print(markdown(summaries))
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
