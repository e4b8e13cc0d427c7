"""How much of a classification task a frozen model's encoder already separates: a linear probe.

  python scripts/probe.py [--model NAME=PATH ...] [--task rotten_tomatoes]
      [--train_examples 4000] [--l2 0.01] [--json PATH]

Encodes each example's inputs (the task's text-to-text format, as prompt tuning sees them)
with a model's frozen encoder, averages the outputs over real tokens, and fits an
L2-regularised softmax regression on the train split. Reports validation accuracy beside
two references that need no model: the train split's majority class, and the same
regression on bag-of-pieces counts (which tokens occur, nothing else). A prompt can only
steer what the frozen model computes; when its features separate the classes no better
than the majority class, prompt tuning has little to steer. Without --model, probes the
two embedded models. Needs the task's corpus (`python scripts/prepare_data.py`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(SCRIPTS), SCRIPTS]
# The results grid's (inputs, targets) lengths per task: the probe reads the inputs
# prompt tuning was given there.
from named_arg import name_equals
from results import FEATURE_LENGTHS


def fit_softmax_regression(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float):
  """Standardises `x [n, d]` and fits weights minimising mean cross-entropy + l2/2 |W|².

  Returns `(predict, objective_parts)`: `predict(x) -> labels`, and the standardised
  features, weights and bias (so tests can check the optimum independently).
  """
  from scipy import optimize
  mean, scale = x.mean(0), x.std(0) + 1e-6
  z = ((x - mean) / scale).astype(np.float64)
  n, d = z.shape
  onehot = np.eye(num_classes)[y]

  def objective(theta):
    w, b = theta[:d * num_classes].reshape(d, num_classes), theta[d * num_classes:]
    logits = z @ w + b
    logits -= logits.max(1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    loss = -(onehot * log_p).sum() / n + 0.5 * l2 * (w * w).sum()
    g = (np.exp(log_p) - onehot) / n
    return loss, np.concatenate([(z.T @ g + l2 * w).ravel(), g.sum(0)])

  theta0 = np.zeros(d * num_classes + num_classes)
  result = optimize.minimize(objective, theta0, jac=True, method="L-BFGS-B",
                             options={"maxiter": 2000, "gtol": 1e-8})
  w = result.x[:d * num_classes].reshape(d, num_classes)
  b = result.x[d * num_classes:]

  def predict(features: np.ndarray) -> np.ndarray:
    return np.argmax(((features - mean) / scale) @ w + b, axis=1)

  return predict, {"z": z, "w": w, "b": b}


def bag_of_pieces(inputs: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
  counts = np.zeros((len(inputs), vocab_size), np.float32)
  for row, ids in zip(counts, inputs):
    np.add.at(row, ids[ids > 0], 1.0)
  return counts


def encoder_features(config, params, inputs: Sequence[np.ndarray], batch_size: int = 64):
  """Mean over real tokens of the frozen encoder's output: `[n, emb_dim]` float32."""
  import jax
  import jax.numpy as jnp

  from prompt_tuning.models.network import T5
  model = T5(config)
  encode = jax.jit(lambda p, t: model.apply({"params": p}, t, method=T5.encode))
  length = max(len(x) for x in inputs)
  out = []
  for start in range(0, len(inputs), batch_size):
    chunk = inputs[start:start + batch_size]
    tokens = np.zeros((batch_size, length), np.int32)  # one shape: one compilation
    for i, ids in enumerate(chunk):
      tokens[i, :len(ids)] = ids
    encoded, mask = encode(params, jnp.asarray(tokens))
    mask = np.asarray(mask, np.float32)[..., None]
    pooled = (np.asarray(encoded, np.float32) * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
    out.append(pooled[:len(chunk)])
  return np.concatenate(out)


def read_split(task_name: str, split: str, limit: int | None):
  """Tokenised inputs and label indices of the task's split (in the corpus's order)."""
  import seqio

  import prompt_tuning.data.tasks  # noqa: F401  (registers the tasks)
  from prompt_tuning.data import corpora
  task = seqio.get_mixture_or_task(task_name)
  labels = list(corpora.LABELS[task_name])
  vocab = task.output_features["targets"].vocabulary
  inputs_length, targets_length = FEATURE_LENGTHS[task_name]
  dataset = task.get_dataset({"inputs": inputs_length, "targets": targets_length}, split=split,
                             shuffle=False)
  inputs, y = [], []
  for example in dataset.as_numpy_iterator():
    if limit is not None and len(inputs) >= limit:
      break
    inputs.append(example["inputs"])
    y.append(labels.index(vocab.decode(example["targets"].tolist())))
  return inputs, np.array(y), labels, vocab.vocab_size


def probe(task_name: str, models: dict[str, str], train_examples: int, l2: float) -> dict:
  from prompt_tuning.models import load_pretrained
  train_x, train_y, labels, vocab_size = read_split(task_name, "train", train_examples)
  val_x, val_y, _, _ = read_split(task_name, "validation", None)
  k = len(labels)
  majority = int(np.bincount(train_y, minlength=k).argmax())
  report = {"task": task_name, "train_examples": len(train_y),
            "validation_examples": len(val_y), "l2": l2,
            "majority_class": {"label": labels[majority],
                               "accuracy": float(np.mean(val_y == majority))}}
  predict, _ = fit_softmax_regression(bag_of_pieces(train_x, vocab_size), train_y, k, l2)
  report["bag_of_pieces"] = float(np.mean(predict(bag_of_pieces(val_x, vocab_size)) == val_y))
  report["encoders"] = {}
  for name, path in models.items():
    config, params = load_pretrained(path)
    predict, _ = fit_softmax_regression(encoder_features(config, params, train_x), train_y,
                                        k, l2)
    accuracy = np.mean(predict(encoder_features(config, params, val_x)) == val_y)
    report["encoders"][name] = {"path": path, "accuracy": float(accuracy)}
    print(f"{name}: validation accuracy {accuracy:.4f}", file=sys.stderr, flush=True)
  return report


def markdown(report: dict) -> str:
  m = report["majority_class"]
  rows = [f"| majority class of train ('{m['label']}') | {m['accuracy']:.3f} |",
          f"| bag of pieces, softmax regression | {report['bag_of_pieces']:.3f} |"]
  rows += [f"| frozen encoder of {name}, mean-pooled, softmax regression | "
           f"{e['accuracy']:.3f} |" for name, e in report["encoders"].items()]
  return "\n".join([f"{report['task']}: validation accuracy ({report['validation_examples']} "
                    f"examples; probes fit on {report['train_examples']} train examples, "
                    f"l2 {report['l2']})", "", "| features | accuracy |", "|---|---:|", *rows])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", action="append", default=[], type=name_equals("PATH"),
                      help="NAME=PATH of a checkpoint load_pretrained reads; repeatable")
  parser.add_argument("--task", default="rotten_tomatoes", choices=sorted(FEATURE_LENGTHS))
  parser.add_argument("--train_examples", type=int, default=4000)
  parser.add_argument("--l2", type=float, default=0.01)
  parser.add_argument("--json")
  args = parser.parse_args(argv)
  models = dict(args.model)
  if not models:
    from prompt_tuning.assets import EMBEDDED_MODELS, embedded_model_path
    models = {name: embedded_model_path(name) for name in EMBEDDED_MODELS}
  from prompt_tuning.data import corpora
  try:
    for split in ("train", "validation"):
      corpora.corpus_path(args.task, split)
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  report = probe(args.task, models, args.train_examples, args.l2)
  if args.json:
    from prompt_tuning.io.files import atomic_file
    with atomic_file(args.json) as f:
      f.write((json.dumps(report, indent=2) + "\n").encode("utf-8"))
  print(markdown(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
