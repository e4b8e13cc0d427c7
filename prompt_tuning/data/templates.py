"""P-tuning's templates: prompt slots interleaved with a task's fields and anchor words.

A template such as `'[P:3] {sentence} [P:3] It was'` is rendered per example as text
with one `[P]` marker per prompt slot (`'[P][P][P] a gripping film [P][P][P] It was'`,
what `inputs_pretokenized` shows), then tokenised piece by piece between the markers
(the anchor words as usual), each marker becoming one reserved token id, the slot id
(which a text's own `<extra_id_..>` never yields: it becomes unk).
The model's input-embedding seam replaces the embedding at every slot id by the next
prompt row (`prompts.combine.into_slots`); the inputs keep their length and mask.

`{name}` is a field of a classification task (the name its inputs show it under, e.g.
`sentence` for rotten_tomatoes), and `{inputs}` the task's whole usual input text, so a
template fits any task. `templated_task(name, template, slot_id)` registers the templated
copy of a task (and of its rank-classification twin) and returns its name.
"""
from __future__ import annotations

import functools
import hashlib
import re
from typing import Mapping, Optional, Sequence

import seqio
import tensorflow as tf

from prompt_tuning.data import preprocessors

MARKER = "[P]"
INPUTS = "inputs"
_PART = re.compile(r"\[P(?::(\d+))?\]|\{(\w+)\}")


def parse(template: str) -> list[tuple[str, object]]:
  """`[("slots", n) | ("field", name) | ("text", words)]` in order; validated."""
  if not isinstance(template, str) or not template.strip():
    raise ValueError(f"a P-tuning template is a non-empty string, got {template!r}")
  parts, end = [], 0
  for match in _PART.finditer(template):
    if template[end:match.start()].strip():
      parts.append(("text", template[end:match.start()].strip()))
    count, field = match.groups()
    if field is not None:
      parts.append(("field", field))
    elif count is not None and int(count) < 1:
      raise ValueError(f"template {template!r}: [P:{count}] needs at least one slot")
    else:
      parts.append(("slots", int(count or 1)))
    end = match.end()
  if template[end:].strip():
    parts.append(("text", template[end:].strip()))
  stray = [w for kind, w in parts if kind == "text" and re.search(r"[\[\]{}]", w)]
  if stray:
    raise ValueError(f"template {template!r}: {stray[0]!r} holds a bracket that is neither "
                     "a prompt slot ([P] or [P:n]) nor a field ({name})")
  if not any(kind == "slots" for kind, _ in parts):
    raise ValueError(f"template {template!r} has no prompt slot: add [P:n] where the prompt "
                     "goes")
  if not any(kind == "field" for kind, _ in parts):
    raise ValueError(f"template {template!r} shows no field of the example: add {{inputs}} "
                     "or a field such as {sentence}")
  return parts


def slot_count(template: str) -> int:
  """How many prompt rows the template places."""
  return sum(n for kind, n in parse(template) if kind == "slots")


def slot_id(vocabulary: seqio.Vocabulary) -> int:
  """The reserved token id of a slot: the vocabulary's lowest sentinel (`<extra_id_99>`
  of T5's 100), which SentencePiece never produces from text."""
  if not vocabulary.extra_ids:
    raise ValueError("a P-tuning template needs a vocabulary with sentinel ids (extra_ids)")
  return vocabulary.vocab_size - vocabulary.extra_ids


def _render(example, parts, fields: Mapping[str, str], inputs) -> tf.Tensor:
  pieces = []
  for kind, value in parts:
    if kind == "slots":
      pieces.append(MARKER * value)
    elif kind == "text":
      pieces.append(value)
    else:
      text = inputs if value == INPUTS else example[fields[value]]
      pieces.append(tf.strings.regex_replace(text, re.escape(MARKER), " "))
  return tf.strings.join(pieces, separator=" ")


@seqio.map_over_dataset
def format_with_template(example, template: str, fields: Mapping[str, str],
                         labels: Sequence[str], label_key: str = "label"):
  """`format_classification`'s example with the inputs rendered by `template`."""
  formatted = preprocessors.classification_example(example, fields, labels, label_key)
  inputs = _render(example, parse(template), fields, formatted["inputs"])
  return {"inputs": inputs, "targets": formatted["targets"]}


@seqio.map_over_dataset
def render_inputs(example, template: str):
  """The template over an example's whole input text (`{inputs}` its only field)."""
  return {**example, "inputs": _render(example, parse(template), {}, example["inputs"])}


def encode_tf(vocabulary: seqio.Vocabulary, text: tf.Tensor, slot: int) -> tf.Tensor:
  """A rendered input (scalar string) to `[length]` ids, each `[P]` becoming `slot`."""
  pieces = vocabulary.encode_tf(tf.strings.split(text, MARKER))  # ragged [slots + 1, None]
  pieces = tf.ragged.map_flat_values(  # a text's own "<extra_id_..>" is no slot
      lambda ids: tf.where(ids == slot, tf.cast(vocabulary.unk_id, ids.dtype), ids), pieces)
  marks = tf.RaggedTensor.from_tensor(tf.fill([tf.shape(pieces.row_splits)[0] - 1, 1],
                                              tf.cast(slot, pieces.dtype)))
  return tf.concat([pieces, marks], axis=1).flat_values[:-1]


def encode(vocabulary: seqio.Vocabulary, text: str, slot: int) -> list[int]:
  """`encode_tf` for one Python string (infer's inputs)."""
  ids = []
  for i, piece in enumerate(text.split(MARKER)):
    ids += ([slot] if i else []) + [vocabulary.unk_id if t == slot else int(t)
                                    for t in vocabulary.encode(piece)]
  return ids


def tokenize_with_slots(dataset: tf.data.Dataset,
                        output_features: Mapping[str, seqio.Feature],
                        slot: int) -> tf.data.Dataset:
  """`seqio.preprocessors.tokenize`, the inputs' `[P]` markers becoming slot ids."""

  def tokenize(example):
    out = dict(example)
    for key in ("inputs", "targets"):
      vocabulary = output_features[key].vocabulary
      out[f"{key}_pretokenized"] = example[key]
      out[key] = (encode_tf(vocabulary, example[key], slot) if key == "inputs"
                  else vocabulary.encode_tf(example[key]))
    return out

  return dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)


def _templated(task: seqio.Task, name: str, template: str, slot: int) -> seqio.Task:
  """The copy of `task` named `name` whose inputs `template` renders."""
  steps, fields = [], None
  for step in task.preprocessors:
    func = getattr(step, "func", None)
    if func is preprocessors.format_classification:
      fields = dict(step.keywords["fields"])
      steps.append(functools.partial(format_with_template, template=template,
                                     **step.keywords))
    elif step is seqio.preprocessors.tokenize or func is seqio.preprocessors.tokenize:
      steps.append(functools.partial(tokenize_with_slots, slot=slot))
    else:
      steps.append(step)
  if fields is None:
    steps = _insert_before_tokenize(steps, functools.partial(render_inputs, template=template))
    fields = {}
  unknown = [v for k, v in parse(template) if k == "field" and v != INPUTS and v not in fields]
  if unknown:
    raise ValueError(f"template {template!r} names field {{{unknown[0]}}}, but task "
                     f"{task.name} shows {sorted(fields) + [INPUTS]}")
  if not any(getattr(s, "func", None) is tokenize_with_slots for s in steps):
    raise ValueError(f"task {task.name} tokenizes its inputs in its own way; a template "
                     "needs seqio.preprocessors.tokenize among its preprocessors")
  return seqio.TaskRegistry.add(name, source=task.source, preprocessors=steps,
                                output_features=task.output_features,
                                postprocess_fn=task.postprocessor,
                                metric_fns=task.metric_fns)


def _insert_before_tokenize(steps: list, step) -> list:
  at = [i for i, s in enumerate(steps) if getattr(s, "func", None) is tokenize_with_slots]
  return steps[:at[0]] + [step] + steps[at[0]:] if at else steps


def templated_task(name: str, template: str, slot: int,
                   rank_suffix: Optional[str] = None) -> str:
  """Registers (once) the templated copies of task `name` and of its `rank_suffix` twin;
  returns the copy's name, `<name>_template_<hash of template and slot>`."""
  if rank_suffix is None:
    from prompt_tuning.data.tasks import RANK_SUFFIX  # pylint: disable=import-outside-toplevel
    rank_suffix = RANK_SUFFIX
  if name not in seqio.TaskRegistry.names():
    raise ValueError(f"a P-tuning template applies to a registered task; {name!r} is not one "
                     "(a mixture's tasks each need their own template)")
  digest = hashlib.sha1(f"{template}\0{slot}".encode()).hexdigest()[:8]
  new = f"{name}_template_{digest}"
  for source, target in [(name, new), (name + rank_suffix, new + rank_suffix)]:
    if source in seqio.TaskRegistry.names() and target not in seqio.TaskRegistry.names():
      _templated(seqio.TaskRegistry.get(source), target, template, slot)
  return new
