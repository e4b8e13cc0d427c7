"""Regenerates the README's results: prompt tuning against full fine-tuning and baselines.

  python scripts/results.py --out_dir=results [--lm_adapted=PATH] [--span_corruption=PATH]
      [--multitask=PATH]
      [--tasks=rotten_tomatoes,reuters_r8] [--seeds=0,1,2] [--train_steps=300]
      [--only=GLOB[,GLOB...]] [--binding=KEY=VALUE ...] [--dry_run]

Every run is its own `python -m prompt_tuning.train` on `configs/quickstart.gin`
(class-label init, prompt length 20, batch 16, 300 steps, no dropout) with the task, its
label words and lengths, the seed and what the cell changes bound on the command line, in
its own MODEL_DIR `out_dir/runs/<task>/<cell>/seed<k>` (with `train.log`). A finished run (its
metrics.jsonl holds the evaluation at the last step) is skipped and a half-finished one
resumes from its checkpoint, so the script can be killed and rerun across sessions
(one copy per out_dir at a time: a second one stops with an error).

Cells, per task and seed (the reference cell is shared by the three comparisons):
  model:  prompt on the LM-adapted model (reference), prompt on the span-corruption-only
          model, prompt on the multi-task model, full fine-tuning of the LM-adapted model (configs/full_finetune.gin),
          and the majority class of the train split (no training)
  init:   class labels (reference), sampled vocabulary, uniform
  length: 1, 5, 20 (reference), 100 prompt tokens
A class-label init needs one row per label; a prompt shorter than the task's label count
starts from sampled vocabulary instead, and the outputs say so.

Accuracy is the validation split's rank-classification accuracy (each label scored by
the model's log-likelihood); decoding accuracy (greedy text equal to the label) is kept
too. Writes out_dir/results.json (every run, and mean, std over seeds, n per cell),
results.md (the tables) and results.png, and prints the goal line.
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import fnmatch
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Iterable, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from prompt_tuning.train import metrics as metrics_lib

# (inputs, targets) tokens per task. rotten_tomatoes keeps the quickstart's lengths (98% of
# validation snippets fit in 64); the news tasks get more input (128 tokens hold a Reuters
# story's opening, where its topic is) and 8 target tokens (labels of up to 5 pieces + EOS).
FEATURE_LENGTHS = {"rotten_tomatoes": (64, 4), "reuters_r8": (128, 8),
                   "newsgroups20": (256, 8)}
MODELS = {"lm_adapted": "t5_lm_adapted", "span_corruption": "t5_span_corruption",
          "multitask": "t5_multitask"}
GOAL_TASK, GOAL_RATIO, GOAL_PERCENT = "rotten_tomatoes", 0.9, 0.5


@dataclasses.dataclass(frozen=True)
class Cell:
  """One configuration of the grid; `key` says what it trains, `name` where it lives."""
  name: str
  model: str = "lm_adapted"  # a key of MODELS
  mode: str = "prompt"  # "prompt" or "full"
  init: str = "class_labels"  # "class_labels", "sampled_vocab" or "uniform"
  prompt_length: int = 20

  @property
  def key(self) -> tuple:
    if self.mode == "full":
      return (self.model, "full")
    return (self.model, "prompt", self.init, self.prompt_length)

  @property
  def label(self) -> str:
    model = {"lm_adapted": "LM-adapted", "span_corruption": "span corruption",
             "multitask": "multi-task"}[self.model]
    if self.mode == "full":
      return f"full fine-tuning, {model}"
    init = self.init.replace("_", " ")
    return f"prompt, {model}, {init} init, length {self.prompt_length}"


REFERENCE = Cell("prompt_lm")
MAJORITY = "majority"
# Each comparison in the order it is shown; equal keys collapse into the first name.
GROUPS = {
    "model": [REFERENCE, Cell("prompt_span", model="span_corruption"),
              Cell("prompt_multitask", model="multitask"), Cell("full", mode="full")],
    "init": [Cell(f"init_{i}", init=i) for i in ("class_labels", "sampled_vocab", "uniform")],
    "length": [Cell(f"length_{p}", prompt_length=p) for p in (1, 5, 20, 100)],
    # The same comparisons on the multi-task model, whose held-out targets these are.
    "mt_model": [Cell("prompt_multitask", model="multitask"),
                 Cell("full_multitask", model="multitask", mode="full")],
    "mt_init": [Cell(f"init_{i}_multitask", model="multitask", init=i)
                for i in ("class_labels", "sampled_vocab", "uniform")],
    "mt_length": [Cell(f"length_{p}_multitask", model="multitask", prompt_length=p)
                  for p in (1, 5, 20, 100)],
}
# Lester et al. 2021's orderings, the hypotheses these runs test.
PAPER_ORDER = {"model": "full fine-tuning > LM-adapted prompt > span-corruption prompt at "
                        "small scale",
               "init": "class labels > sampled vocab > uniform at small scale",
               "length": "longer helps up to about 20 tokens, little beyond"}
PAPER_ORDER.update({f"mt_{g}": PAPER_ORDER[g] for g in ("init", "length")})
PAPER_ORDER["mt_model"] = "full fine-tuning > prompt at small scale"


def grid() -> tuple[list[Cell], dict[str, list[str]]]:
  """The distinct cells in order, and each comparison's cell names after deduplication."""
  cells, by_key, groups = [], {}, {}
  for group, members in GROUPS.items():
    for cell in members:
      if cell.key not in by_key:
        by_key[cell.key] = cell
        cells.append(cell)
    groups[group] = [by_key[c.key].name for c in members]
  return cells, groups


def select(cells: Sequence[Cell], only: Optional[str]) -> list[Cell]:
  """Cells whose name matches one of the comma-separated globs (all without `only`)."""
  if not only:
    return list(cells)
  globs = [g.strip() for g in only.split(",") if g.strip()]
  return [c for c in cells if any(fnmatch.fnmatchcase(c.name, g) for g in globs)]


def effective_init(cell: Cell, num_labels: int) -> Optional[str]:
  """The initialiser a run uses: class labels fall back to sampled vocab when they do not fit."""
  if cell.mode == "full":
    return None
  if cell.init == "class_labels" and cell.prompt_length < num_labels:
    return "sampled_vocab"
  return cell.init


def train_command(task: str, cell: Cell, seed: int, labels: Sequence[str], model_path: str,
                  model_dir: str, train_steps: int, extra: Sequence[str] = ()) -> list[str]:
  """The `python -m prompt_tuning.train` command line of one run; `extra` are gin bindings
  ("KEY=VALUE") bound after the cell's, e.g. another learning rate for every run."""
  inputs, targets = FEATURE_LENGTHS[task]
  files = ["configs/quickstart.gin"]
  init = effective_init(cell, len(labels))
  if cell.mode == "full":
    files.append("configs/full_finetune.gin")
  elif init != "class_labels":
    files.append(f"gin/prompts/from_{init}.gin")
  bindings = {
      "MODEL_DIR": repr(model_dir), "INITIAL_CHECKPOINT_PATH": repr(model_path),
      "MIXTURE_OR_TASK_NAME": repr(task), "CLASS_LABELS": repr(list(labels)),
      "TASK_FEATURE_LENGTHS": repr({"inputs": inputs, "targets": targets}),
      "PROMPT_LENGTH": cell.prompt_length, "TRAIN_STEPS": train_steps,
      "EVAL_PERIOD": train_steps, "CHECKPOINT_PERIOD": min(100, train_steps),
      "train.seed": seed, "train.keep_checkpoints": 1}
  return ([sys.executable, "-m", "prompt_tuning.train"]
          + [f"--gin_file={f}" for f in files] + [f"--gin.{k}={v}" for k, v in bindings.items()]
          + [f"--gin.{b}" for b in extra])


# ---------------------------------------------------------------------------
# Reading runs back.


def read_metrics(model_dir: str) -> list[dict]:
  """The records of a run's `metrics.jsonl`; none for a run not started yet."""
  if not os.path.exists(os.path.join(model_dir, metrics_lib.METRICS_FILE)):
    return []
  return metrics_lib.read_metrics(model_dir)


def final_eval(records: Iterable[dict], task: str, train_steps: int) -> Optional[dict]:
  """The last evaluation at step `train_steps`: accuracy (rank classification), decoding
  accuracy and every other eval metric without its `eval/` prefix; None if there is none."""
  rank_key = f"eval/{task}_rank_classification/accuracy"
  found = None
  for record in records:
    if record.get("step") == train_steps and rank_key in record:
      found = record
  if found is None:
    return None
  out = {"accuracy": found[rank_key], "decode_accuracy": found.get(f"eval/{task}/accuracy")}
  out["eval"] = {k[len("eval/"):]: v for k, v in found.items() if k.startswith("eval/")}
  return out


def majority_class(train_labels: Sequence[str], validation_labels: Sequence[str],
                   labels: Sequence[str]) -> dict:
  """The train split's most frequent label (ties: the first in `labels`), scored on validation."""
  counts = {l: 0 for l in labels}
  for label in train_labels:
    counts[label] += 1
  best = max(labels, key=lambda l: counts[l])  # max keeps the first of equal counts
  hits = sum(label == best for label in validation_labels)
  return {"label": best, "accuracy": hits / len(validation_labels),
          "train_fraction": counts[best] / len(train_labels)}


def read_labels(path: str) -> list[str]:
  """The `label` column of a corpus TSV."""
  with open(path, encoding="utf-8") as f:
    column = f.readline().rstrip("\n").split("\t").index("label")
    return [line.rstrip("\n").split("\t")[column] for line in f if line.strip()]


def count_parameters(path: str) -> dict:
  """`{"parameters": every weight of the checkpoint, "d_model": its embedding width}`."""
  import numpy as np
  import jax
  from prompt_tuning.models import load_pretrained
  config, params = load_pretrained(path)
  return {"parameters": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params))),
          "d_model": int(config.emb_dim)}


def trainable_parameters(cell: Cell, model: dict) -> int:
  return model["parameters"] if cell.mode == "full" else cell.prompt_length * model["d_model"]


# ---------------------------------------------------------------------------
# Aggregates, tables and the plot: pure functions of the runs.


def summarize(values: Sequence[float]) -> dict:
  """Mean and sample standard deviation (ddof=1; 0 for a single value) over seeds."""
  values = [float(v) for v in values]
  n = len(values)
  mean = sum(values) / n if n else math.nan
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
  return {"mean": mean, "std": std if n else math.nan, "n": n, "values": values}


def aggregate(runs: Iterable[dict]) -> dict:
  """`{task: {cell: {"accuracy": summary, "decode_accuracy": summary}}}` over finished runs."""
  grouped = {}
  for run in runs:
    if run.get("accuracy") is None:
      continue
    cell = grouped.setdefault(run["task"], {}).setdefault(run["cell"], {})
    for metric in ("accuracy", "decode_accuracy"):
      if run.get(metric) is not None:
        cell.setdefault(metric, []).append(run[metric])
  return {task: {cell: {m: summarize(v) for m, v in metrics.items()}
                 for cell, metrics in cells.items()}
          for task, cells in grouped.items()}


def goal(aggregates: dict, cells: dict) -> Optional[dict]:
  """The issue's goal: the reference prompt's accuracy over full fine-tuning's on
  rotten_tomatoes (>= 0.9) with under 0.5 % of the parameters; None without both cells.

  A prompt that answers the majority class for every review can pass the ratio when full
  fine-tuning is weak, so the goal also asks the prompt to beat the majority class."""
  task = aggregates.get(GOAL_TASK, {})
  if REFERENCE.name not in task or "full" not in task or REFERENCE.name not in cells:
    return None
  prompt, full = task[REFERENCE.name]["accuracy"]["mean"], task["full"]["accuracy"]["mean"]
  majority = task.get(MAJORITY, {}).get("accuracy", {}).get("mean")
  ratio = prompt / full if full > 0 else math.inf
  percent = cells[REFERENCE.name]["percent_of_model"]
  above_majority = majority is None or prompt > majority
  return {"task": GOAL_TASK, "prompt_accuracy": prompt, "full_accuracy": full, "ratio": ratio,
          "percent_of_parameters": percent, "majority_accuracy": majority,
          "met": bool(ratio >= GOAL_RATIO and percent < GOAL_PERCENT and above_majority)}


def goal_line(g: Optional[dict]) -> str:
  if g is None:
    return (f"goal: needs the {REFERENCE.name} and full cells on {GOAL_TASK}; "
            "not measured in this selection")
  majority = ("" if g.get("majority_accuracy") is None else
              f"; the majority class scores {g['majority_accuracy']:.4f}")
  return (f"goal: prompt tuning (LM-adapted, reference cell) reaches {g['prompt_accuracy']:.4f} / "
          f"{g['full_accuracy']:.4f} = {100 * g['ratio']:.1f}% of full fine-tuning's accuracy on "
          f"{g['task']} with {g['percent_of_parameters']:.3f}% of its parameters{majority} "
          f"(goal: >= {100 * GOAL_RATIO:.0f}% with < {GOAL_PERCENT}%, above the majority "
          f"class): {'met' if g['met'] else 'not met'}")


def _shown(summary: Optional[dict]) -> str:
  if not summary or not summary["n"]:
    return "-"
  return f"{summary['mean']:.3f} ± {summary['std']:.3f} ({summary['n']})"


def short_label(cell: dict, group: str) -> str:
  """A cell's name within one comparison: what differs there."""
  if cell.get("mode") == "full":
    return "full fine-tuning"
  group = group.removeprefix("mt_")
  if group == "model":
    return {"lm_adapted": "LM-adapted prompt", "span_corruption": "span-corruption prompt",
            "multitask": "multi-task prompt"}[
        cell["model"]]
  if group == "init":
    return cell["init"].replace("_", " ")
  return f"length {cell['prompt_length']}"


def orderings(aggregates: dict, groups: dict[str, list[str]], cells: dict) -> list[str]:
  """Per task and comparison, the cells sorted by mean accuracy, best first, beside the
  paper's ordering."""
  lines = []
  for task, stats in aggregates.items():
    for group, names in groups.items():
      present = [n for n in dict.fromkeys(names) if n in stats and n in cells]
      if len(present) < 2:
        continue
      present.sort(key=lambda n: -stats[n]["accuracy"]["mean"])
      shown = " > ".join(f"{short_label(cells[n], group)} {_shown(stats[n]['accuracy'])}"
                         for n in present)
      lines.append(f"- {task}, {group}: {shown} (paper: {PAPER_ORDER[group]})")
  return lines


def markdown(results: dict) -> str:
  """The tables of results.md: rank-classification accuracy, then decoding accuracy."""
  aggregates, cells, tasks = results["aggregates"], results["cells"], results["settings"]["tasks"]
  rows = [n for n in cells if any(n in aggregates.get(t, {}) for t in tasks)]
  s = results["settings"]
  out = [f"Validation accuracy, mean ± std over seeds (n), {s['train_steps']} steps, seeds "
         f"{', '.join(map(str, s['seeds']))}; trainable parameters and their share of the "
         "model's.", ""]
  for metric, title in (("accuracy", "rank classification"), ("decode_accuracy", "decoding")):
    out += [f"| cell ({title}) | trainable params | % of model | " + " | ".join(tasks) + " |",
            "|---|---:|---:|" + "---:|" * len(tasks)]
    for name in rows:
      c = cells[name]
      out.append(f"| {c['label']} | {c['trainable_parameters']:,} | {c['percent_of_model']:.3f} | "
                 + " | ".join(_shown(aggregates.get(t, {}).get(name, {}).get(metric))
                              for t in tasks) + " |")
    out.append("")
  notes = [f"- {r['task']}: {r['cell']} starts from {r['init']} (the {r['num_labels']} class "
           f"labels do not fit in a {cells[r['cell']]['prompt_length']}-token prompt)"
           for r in results["fallbacks"]]
  chosen = ", ".join(f"{t} '{m['label']}'" for t, m in results["majority"].items())
  out += [f"Majority class: the train split's most frequent label ({chosen}), scored on "
          "validation; no training, one value. Accuracy is rank classification's unless "
          "the table says decoding."] + notes + [""]
  ranked = orderings(aggregates, results["groups"], cells)
  if ranked:
    out += ["Orderings, best first (mean ± std (n)):"] + ranked + [""]
  out.append(goal_line(results["goal"]))
  return "\n".join(out) + "\n"


def plot(results: dict, path: str) -> None:
  """results.png: bars per task (model, init, majority) with std error bars; accuracy
  against prompt length with full fine-tuning (dashed) and the majority class (dotted)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  aggregates, cells, groups = results["aggregates"], results["cells"], results["groups"]
  tasks = [t for t in results["settings"]["tasks"] if t in aggregates]
  bars = [n for n in dict.fromkeys(groups["model"] + groups["init"] + [MAJORITY])
          if any(n in aggregates[t] for t in tasks)]
  fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [3, 2]})
  width = 0.8 / max(len(bars), 1)
  x = np.arange(len(tasks))
  for j, name in enumerate(bars):
    stats = [aggregates[t].get(name, {}).get("accuracy") for t in tasks]
    means = [s["mean"] if s else np.nan for s in stats]
    stds = [s["std"] if s else 0.0 for s in stats]
    drawn = left.bar(x + (j - (len(bars) - 1) / 2) * width, means, width, yerr=stds,
                     capsize=3, label=cells[name]["label"])
    left.bar_label(drawn, fmt="%.2f", fontsize=7, label_type="center", rotation=90,
                   color="white")
  left.set_xticks(x, tasks)
  left.set_ylim(0, 1)
  left.set_ylabel("validation accuracy (rank classification)")
  left.set_title("Model, initialisation and baselines")
  left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
  for k, task in enumerate(tasks):
    color = f"C{k}"
    points = [(cells[n]["prompt_length"], aggregates[task][n]["accuracy"])
              for n in dict.fromkeys(groups["length"]) if n in aggregates[task]]
    if points:
      points.sort(key=lambda p: p[0])
      right.errorbar([p for p, _ in points], [s["mean"] for _, s in points],
                     yerr=[s["std"] for _, s in points], marker="o", capsize=3, color=color,
                     label=f"{task} prompt")
    for name, style in (("full", "--"), (MAJORITY, ":")):
      if name in aggregates[task]:
        right.axhline(aggregates[task][name]["accuracy"]["mean"], color=color, linestyle=style,
                      label=f"{task} {'full fine-tuning' if name == 'full' else 'majority'}")
  right.set_xscale("log")
  right.set_xticks([1, 5, 20, 100], ["1", "5", "20", "100"])
  right.set_ylim(0, 1)
  right.set_xlabel("prompt length (tokens)")
  right.set_title("Prompt length (LM-adapted, class-label init)")
  right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
  s = results["settings"]
  fig.suptitle(f"{s['train_steps']} steps, mean ± std over seeds {s['seeds']}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# ---------------------------------------------------------------------------
# Running.


def _write(path: str, text: str) -> None:
  from prompt_tuning.io.files import atomic_file
  with atomic_file(path) as f:
    f.write(text.encode("utf-8"))


def _clock(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _train(command: list[str], model_dir: str, train_steps: int, prefix: str) -> int:
  """Runs one training process, its output appended to `model_dir/train.log`."""
  os.makedirs(model_dir, exist_ok=True)
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  live = sys.stdout.isatty()
  start = time.time()
  with open(os.path.join(model_dir, "train.log"), "a", encoding="utf-8") as log:
    log.write("$ " + shlex.join(command) + "\n")
    log.flush()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO, env=env)
    try:
      for line in proc.stdout:
        log.write(line)
        step = re.match(r"step (\d+)[:/]", line)  # "step 2: ..." or "step 2/300  loss ..."
        if live and step:
          print(f"\r{prefix} step {step[1]}/{train_steps}, {_clock(time.time() - start)}",
                end="", flush=True)
      return proc.wait()
    finally:
      if proc.poll() is None:
        proc.terminate()
        proc.wait()
      if live:
        print("\r", end="")


def _tail(path: str, lines: int = 15) -> str:
  with open(path, encoding="utf-8", errors="replace") as f:
    return "".join(f.readlines()[-lines:])


def resolve_model(name: str, given: Optional[str]) -> str:
  """A model path from the command line, else the embedded model; a clear error if neither."""
  if given:
    path = os.path.abspath(os.path.expanduser(given))
    if not os.path.exists(path):
      raise FileNotFoundError(f"--{name}={given} does not exist")
    return path
  from prompt_tuning.assets import embedded_model_path
  try:
    return embedded_model_path(MODELS[name])
  except FileNotFoundError:
    raise FileNotFoundError(
        f"the embedded {MODELS[name]!r} model is not in this installation yet; pass one with "
        f"--{name}=PATH (a Hugging Face, T5X or our own checkpoint folder)") from None


def lock_out_dir(out_dir: str):
  """Holds `out_dir/.lock` until the returned file is closed (or the process ends), so two
  copies of this script never train the same run into one MODEL_DIR."""
  os.makedirs(out_dir, exist_ok=True)
  handle = open(os.path.join(out_dir, ".lock"), "w")
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.close()
    raise RuntimeError(f"another scripts/results.py is running on {out_dir}; wait for it "
                       "or stop it (a rerun continues where it left off)") from None
  return handle


def execute(runs: list[dict], commands: list[list[str]], train_steps: int,
            dry_run: bool = False) -> list[dict]:
  """Trains every run not yet finished, in order, with progress; returns those that failed."""
  start, trained, failed = time.time(), [], []
  for i, (run, command) in enumerate(zip(runs, commands), 1):
    prefix = f"[{i}/{len(runs)}] {run['task']}/{run['cell']}/seed{run['seed']}:"
    done = final_eval(read_metrics(run["model_dir"]), run["task"], train_steps)
    resuming = os.path.isdir(os.path.join(run["model_dir"], "checkpoints"))
    if dry_run:
      state = "done" if done else "resume" if resuming else "new"
      print(f"{prefix} {state}\n  " + shlex.join(command))
      continue
    if done:
      print(f"{prefix} done (accuracy {done['accuracy']:.4f}), skipped", flush=True)
      continue
    log = os.path.join(run["model_dir"], "train.log")
    print(f"{prefix} {'resuming' if resuming else 'training'}; log in {log}", flush=True)
    t0 = time.time()
    rc = _train(command, run["model_dir"], train_steps, prefix)
    trained.append(time.time() - t0)
    done = final_eval(read_metrics(run["model_dir"]), run["task"], train_steps)
    if rc != 0 or done is None:
      failed.append(run)
      print(f"{prefix} FAILED (exit {rc}); the end of its log:\n" + _tail(log),
            file=sys.stderr, flush=True)
      continue
    left = sum(final_eval(read_metrics(r["model_dir"]), r["task"], train_steps) is None
               for r in runs[i:])
    decoding = done["decode_accuracy"]
    decoding = "-" if decoding is None else f"{decoding:.4f}"
    print(f"{prefix} accuracy {done['accuracy']:.4f} (decoding {decoding}) in "
          f"{_clock(trained[-1])}; elapsed {_clock(time.time() - start)}, about "
          f"{_clock(left * sum(trained) / len(trained))} for the {left} runs left", flush=True)
  return failed


def collect(runs: list[dict], cells: Sequence[Cell], groups: dict, paths: dict[str, str],
            splits: dict, labels: dict[str, list[str]], settings: dict) -> dict:
  """Everything results.json holds: runs, parameter counts, majority class, aggregates, goal."""
  by_name = {c.name: c for c in cells}
  for run in runs:
    done = final_eval(read_metrics(run["model_dir"]), run["task"], settings["train_steps"])
    run.update(done or {"accuracy": None, "decode_accuracy": None})
    run["status"] = "done" if done else "missing"
    run["init"] = effective_init(by_name[run["cell"]], len(labels[run["task"]]))
  models = {m: {"path": p, **count_parameters(p)} for m, p in paths.items()}
  info = {}
  for c in cells:
    trainable = trainable_parameters(c, models[c.model])
    info[c.name] = {"label": c.label + (" (reference)" if c == REFERENCE else ""),
                    **dataclasses.asdict(c), "trainable_parameters": trainable,
                    "percent_of_model": 100 * trainable / models[c.model]["parameters"]}
  info[MAJORITY] = {"label": "majority class (train split)", "trainable_parameters": 0,
                    "percent_of_model": 0.0}
  tasks = settings["tasks"]
  majority = {t: majority_class(read_labels(splits[t]["train"]),
                                read_labels(splits[t]["validation"]), labels[t]) for t in tasks}
  aggregates = aggregate(runs)
  for t in tasks:
    aggregates.setdefault(t, {})[MAJORITY] = {"accuracy": summarize([majority[t]["accuracy"]])}
  fallbacks = [{"task": t, "cell": c.name, "init": effective_init(c, len(labels[t])),
                "num_labels": len(labels[t])}
               for t in tasks for c in cells
               if c.mode == "prompt" and effective_init(c, len(labels[t])) != c.init]
  return {"settings": settings, "models": models, "cells": info, "groups": groups,
          "majority": majority, "fallbacks": fallbacks, "runs": runs, "aggregates": aggregates,
          "goal": goal(aggregates, info)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--lm_adapted", default=None, help="default: the embedded t5_lm_adapted")
  parser.add_argument("--span_corruption", default=None,
                      help="default: the embedded t5_span_corruption")
  parser.add_argument("--multitask", default=None, help="default: the embedded t5_multitask")
  parser.add_argument("--tasks", default="rotten_tomatoes,reuters_r8",
                      help=f"comma-separated, from {', '.join(FEATURE_LENGTHS)}")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--train_steps", type=int, default=300)
  parser.add_argument("--only", default=None,
                      help="comma-separated globs of cell names, e.g. 'prompt_lm,full'")
  parser.add_argument("--binding", action="append", default=[], metavar="KEY=VALUE",
                      help="a gin binding added to every run (repeatable), e.g. "
                           "--binding=constant_schedule.value=0.03; use its own --out_dir")
  parser.add_argument("--dry_run", action="store_true",
                      help="print each run's status and command; train nothing")
  args = parser.parse_args(argv)
  tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
  unknown = [t for t in tasks if t not in FEATURE_LENGTHS]
  if unknown or not tasks:
    parser.error(f"unknown task {', '.join(unknown)}; choose from {', '.join(FEATURE_LENGTHS)}")
  try:
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  except ValueError:
    parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
  bad = [b for b in args.binding if "=" not in b or not b.split("=", 1)[0].strip()]
  if bad:
    parser.error(f"--binding takes KEY=VALUE (a gin binding), got {', '.join(map(repr, bad))}")
  if not seeds or args.train_steps < 1:
    parser.error("give at least one seed and --train_steps >= 1")
  all_cells, groups = grid()
  cells = select(all_cells, args.only)
  if not cells and not fnmatch.fnmatchcase(MAJORITY, args.only or ""):
    parser.error(f"--only={args.only} matches no cell; cells: "
                 f"{', '.join(c.name for c in all_cells)}, {MAJORITY}")
  try:
    paths = {m: resolve_model(m, getattr(args, m)) for m in dict.fromkeys(c.model for c in cells)}
    from prompt_tuning.data import corpora
    splits = {t: {s: corpora.corpus_path(t, s) for s in ("train", "validation")} for t in tasks}
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1

  out_dir = os.path.abspath(args.out_dir)
  runs = [{"task": t, "cell": c.name, "seed": k,
           "model_dir": os.path.join(out_dir, "runs", t, c.name, f"seed{k}")}
          for t in tasks for c in cells for k in seeds]
  by_name = {c.name: c for c in cells}
  commands = [train_command(r["task"], by_name[r["cell"]], r["seed"], corpora.LABELS[r["task"]],
                            paths[by_name[r["cell"]].model], r["model_dir"], args.train_steps,
                            args.binding)
              for r in runs]
  try:
    lock = None if args.dry_run else lock_out_dir(out_dir)
  except RuntimeError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  try:
    failed = execute(runs, commands, args.train_steps, args.dry_run)
  except KeyboardInterrupt:
    print("\ninterrupted; rerun the same command to continue", file=sys.stderr)
    return 130
  if args.dry_run:
    return 0

  settings = {"tasks": tasks, "seeds": seeds, "train_steps": args.train_steps,
              "only": args.only, "recipe": "configs/quickstart.gin", "bindings": args.binding,
              "feature_lengths": {t: FEATURE_LENGTHS[t] for t in tasks}}
  results = collect(runs, cells, groups, paths, splits, corpora.LABELS, settings)
  os.makedirs(out_dir, exist_ok=True)
  _write(os.path.join(out_dir, "results.json"), json.dumps(results, indent=2) + "\n")
  table = markdown(results)
  _write(os.path.join(out_dir, "results.md"), table)
  plot(results, os.path.join(out_dir, "results.png"))
  print(table)
  print(f"wrote results.json, results.md and results.png to {out_dir}")
  lock.close()
  if failed:
    print(f"error: {len(failed)} runs failed: "
          + ", ".join(f"{r['task']}/{r['cell']}/seed{r['seed']}" for r in failed)
          + "; rerun the same command to retry them", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
