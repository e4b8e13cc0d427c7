"""seqio Task registrations; importing `prompt_tuning.data` runs them.

- `pretrain_span_corruption`, `lm_adaptation_prefix_lm`: the prose corpus.
- `rotten_tomatoes`, `newsgroups20`, `reuters_r8`: text-to-text classification
  ("<field>: <text>" -> label word) on the offline corpora.
- `glue_{sst2,rte,mrpc}`, `super_glue_{boolq,cb,copa,rte,wic}`: the same form
  (Lester et al.'s task-name-free T5 format) read with TFDS.
- every classification task has a `<name>_rank_classification` twin for
  scoring each label.
- `tsv_classification_task(...)`: classification on your own TSV files;
  `tsv_text_task(...)`: span corruption or prefix LM on their texts.

Corpus files are located when a dataset is read, so registering never needs
them; reading one that is not prepared raises corpora's "run prepare_data".
"""
import functools
import logging
import os
from typing import Mapping, Optional, Sequence

import gin
import seqio

from prompt_tuning.data import corpora
from prompt_tuning.data import metrics
from prompt_tuning.data import preprocessors
from prompt_tuning.data import tsv
from prompt_tuning.data import vocab

RANK_SUFFIX = "_rank_classification"

# name: (TFDS name, {name in the inputs: feature}, label words in index order)
TFDS_TASKS = {
    "glue_sst2": ("glue/sst2:2.0.0", {"sentence": "sentence"},
                  ["negative", "positive"]),
    "glue_rte": ("glue/rte:2.0.0",
                 {"sentence1": "sentence1", "sentence2": "sentence2"},
                 ["entailment", "not_entailment"]),
    "glue_mrpc": ("glue/mrpc:2.0.0",
                  {"sentence1": "sentence1", "sentence2": "sentence2"},
                  ["not_equivalent", "equivalent"]),
    "super_glue_boolq": ("super_glue/boolq:1.0.2",
                         {"question": "question", "passage": "passage"},
                         ["False", "True"]),
    "super_glue_cb": ("super_glue/cb:1.0.2",
                      {"premise": "premise", "hypothesis": "hypothesis"},
                      ["entailment", "contradiction", "neutral"]),
    "super_glue_copa": ("super_glue/copa:1.0.2",
                        {"premise": "premise", "question": "question",
                         "choice1": "choice1", "choice2": "choice2"},
                        ["choice1", "choice2"]),
    "super_glue_rte": ("super_glue/rte:1.0.2",
                       {"premise": "premise", "hypothesis": "hypothesis"},
                       ["entailment", "not_entailment"]),
    "super_glue_wic": ("super_glue/wic:1.0.2",
                       {"sentence1": "sentence1", "sentence2": "sentence2",
                        "word": "word"},
                       ["False", "True"]),
}
# The name each corpus's text is shown under in the inputs.
CORPUS_FIELD = {"rotten_tomatoes": "sentence", "newsgroups20": "text",
                "reuters_r8": "text"}


def task_vocabulary() -> seqio.Vocabulary:
  """The vocabulary of every task registered here."""
  return vocab.get_vocabulary()


def output_features() -> dict[str, seqio.Feature]:
  v = task_vocabulary()
  return {"inputs": seqio.Feature(v, add_eos=True),
          "targets": seqio.Feature(v, add_eos=True)}


TOKENIZE = [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim]


def _add(name: str, **kwargs) -> seqio.Task:
  """Registers a task unless one of that name exists (then returns it)."""
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  return seqio.TaskRegistry.add(name, output_features=output_features(), **kwargs)


def _corpus_path(name: str, split: str) -> str:
  return corpora.corpus_path(name, split)


def corpus_source(name: str) -> tsv.TsvDataSource:
  """The prepared TSVs of an offline corpus, located when read."""
  labels = corpora.LABELS.get(name)
  return tsv.TsvDataSource(
      {s: functools.partial(_corpus_path, name, s)
       for s in corpora.CORPORA[name].splits},
      columns=["text"], labels=labels, label_column="label" if labels else None)


def register_classification(name: str, source: seqio.DataSource,
                            fields: Mapping[str, str], labels: Sequence[str],
                            label_key: str = "label") -> seqio.Task:
  """Registers `name` (text to label word) and its rank-classification twin.

  Metrics: accuracy, plus macro-F1 with more than two labels. Returns the
  text-to-text task.
  """
  labels = list(labels)
  formatted = functools.partial(preprocessors.format_classification,
                                fields=dict(fields), labels=labels,
                                label_key=label_key)
  with_f1 = len(labels) > 2
  task = _add(name, source=source, preprocessors=[formatted] + TOKENIZE,
              metric_fns=[metrics.accuracy] + ([metrics.macro_f1] if with_f1 else []))
  _add(name + RANK_SUFFIX, source=source,
       preprocessors=[formatted,
                      functools.partial(preprocessors.rank_classification,
                                        labels=labels)] + TOKENIZE,
       postprocess_fn=metrics.rank_classification_target,
       metric_fns=[functools.partial(metrics.rank_classification,
                                     num_classes=len(labels), labels=labels)])
  return task


# objective name -> the seqio preprocessor that makes (inputs, targets) from text.
TEXT_OBJECTIVES = {"span_corruption": preprocessors.span_corruption,
                   "prefix_lm": preprocessors.prefix_lm}


def _text_preprocessors(objective: str, text_key: str = "text") -> list:
  """Tokenize the `text_key` field, then cut it with `objective`."""
  if objective not in TEXT_OBJECTIVES:
    raise ValueError(f"Unknown objective {objective!r}; choose one of "
                     f"{sorted(TEXT_OBJECTIVES)}.")
  return [functools.partial(seqio.preprocessors.rekey, key_map={"targets": text_key}),
          functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
          TEXT_OBJECTIVES[objective], seqio.preprocessors.append_eos_after_trim]


def _register_pretraining() -> None:
  for name, objective in [("pretrain_span_corruption", "span_corruption"),
                          ("lm_adaptation_prefix_lm", "prefix_lm")]:
    _add(name, source=corpus_source("prose"),
         preprocessors=_text_preprocessors(objective), metric_fns=[])


def register_all() -> None:
  """Registers every task of this module; tasks already registered are kept."""
  _register_pretraining()
  for name, field in CORPUS_FIELD.items():
    register_classification(name, corpus_source(name), {field: "text"},
                            corpora.LABELS[name])
  for name, (tfds_name, fields, labels) in TFDS_TASKS.items():
    source = seqio.TfdsDataSource(tfds_name, splits=["train", "validation"])
    register_classification(name, source, fields, labels)


# name -> (the arguments it was registered with, the task names it registered), for
# tasks made from users' TSVs.
_USER_TASKS = {}


def _check_labels(labels: Sequence[str]) -> list[str]:
  if isinstance(labels, str) or not all(isinstance(l, str) for l in labels):
    raise TypeError(f"labels must be a list of label strings, got {labels!r}.")
  labels = list(labels)
  if len(labels) < 2 or len(set(labels)) != len(labels):
    raise ValueError(f"labels must hold at least two distinct strings, got {labels}.")
  bad = [l for l in labels if not l.strip() or "\t" in l or "\n" in l]
  if bad:
    raise ValueError(f"labels {bad} are empty or hold tabs/newlines; a label is "
                     "one TSV field and the model's target text.")
  return labels


@gin.configurable
def tsv_classification_task(name: str,
                            train: str,
                            validation: str,
                            labels: Sequence[str],
                            test: Optional[str] = None,
                            text_column: str = "text",
                            label_column: str = "label") -> seqio.Task:
  """Registers and returns a classification Task over your header-first TSV files.

  Inputs are "<text_column>: <text>", targets the row's label, one of `labels`.
  Every file is checked now (missing file or column, a label outside
  `labels`, no rows) with an error naming file and line. Also registers
  `<name>_rank_classification`. Calling again with the same arguments returns
  the registered task; with other arguments it replaces both tasks.
  """
  labels = _check_labels(labels)
  paths = {"train": train, "validation": validation}
  if test is not None:
    paths["test"] = test
  paths = {split: os.path.abspath(path) for split, path in paths.items()}
  for path in paths.values():
    tsv.scan_tsv(path, [text_column], labels, label_column)
  source = tsv.TsvDataSource(paths, [text_column], labels, label_column)
  return _register_user_task(
      name, (paths, labels, text_column, label_column),
      lambda: register_classification(name, source, {text_column: text_column}, labels),
      [name, name + RANK_SUFFIX])


@gin.configurable
def tsv_text_task(name: str,
                  train: str,
                  validation: str,
                  objective: str = "prefix_lm",
                  text_column: str = "text") -> seqio.Task:
  """Registers and returns a self-supervised Task over the texts of your TSV files.

  For pretraining (`objective="span_corruption"`, as `configs/pretrain.gin`) or
  LM adaptation and domain adaptation (`"prefix_lm"`, as
  `configs/lm_adaptation.gin`) on your own corpus: each row's `text_column` is
  tokenized and cut into inputs and targets; other columns (a label) are
  ignored. Files are checked now, as for `tsv_classification_task`; calling
  again with the same arguments returns the registered task.
  """
  preprocessors_ = _text_preprocessors(objective, text_column)
  paths = {"train": os.path.abspath(train), "validation": os.path.abspath(validation)}
  for path in paths.values():
    tsv.scan_tsv(path, [text_column])
  source = tsv.TsvDataSource(paths, [text_column])
  return _register_user_task(
      name, (paths, objective, text_column),
      lambda: _add(name, source=source, preprocessors=preprocessors_, metric_fns=[]),
      [name])


def _register_user_task(name: str, arguments: tuple, register, names: Sequence[str]
                        ) -> seqio.Task:
  """Registers the tasks `names` with `register()` unless `name` holds `arguments`.

  A user task registered before with other arguments is replaced; a name that
  other code registered is an error.
  """
  if name in _USER_TASKS:
    registered_arguments, registered_names = _USER_TASKS[name]
    if registered_arguments == arguments and name in seqio.TaskRegistry.names():
      return seqio.TaskRegistry.get(name)
    logging.info("Replacing task %s: its arguments changed.", name)
    for n in registered_names:
      seqio.TaskRegistry.remove(n)
    del _USER_TASKS[name]
  taken = [n for n in names if n in seqio.TaskRegistry.names()]
  if taken:
    raise ValueError(f"Task names {taken} are already registered by other code; "
                     "choose another name for your task.")
  task = register()
  _USER_TASKS[name] = (arguments, list(names))
  return task


register_all()
