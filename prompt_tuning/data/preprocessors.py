"""seqio preprocessors: T5 span corruption, prefix LM, and classification as text.

Randomness comes from seqio's per-example stateless seeds (`map_over_dataset`
with `num_seeds`), so a Task's output is a function of its `seed`. The
pretraining preprocessors read token ids from "targets" (after `tokenize`) and
leave EOS to `seqio.preprocessors.append_eos_after_trim`.
"""
from typing import Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf


def _noise_counts(length, noise_density: float, mean_noise_span_length: float):
  """(noise tokens, noise spans) in a sequence of `length` (>= 2) tokens; elementwise."""
  length = tf.convert_to_tensor(length, tf.int32)
  noise = tf.cast(tf.round(tf.cast(length, tf.float32) * noise_density), tf.int32)
  noise = tf.clip_by_value(noise, 1, length - 1)
  spans = tf.cast(tf.round(tf.cast(noise, tf.float32) / mean_noise_span_length),
                  tf.int32)
  # Every noise span needs a kept span before it.
  spans = tf.clip_by_value(spans, 1, length - noise)
  return noise, spans


def _check_noise(noise_density: float, mean_noise_span_length: float) -> None:
  if not 0.0 < noise_density < 1.0:
    raise ValueError(f"noise_density must lie in (0, 1), got {noise_density}.")
  if mean_noise_span_length < 1.0:
    raise ValueError("mean_noise_span_length must be at least 1, got "
                     f"{mean_noise_span_length}.")


def span_corruption_lengths(inputs_length: int,
                            targets_length: Optional[int] = None,
                            noise_density: float = 0.15,
                            mean_noise_span_length: float = 3.0,
                            add_eos: bool = True) -> tuple[int, int]:
  """(raw tokens per example, targets length) for span corruption.

  The raw length is the largest for which the corrupted inputs (kept tokens,
  one sentinel per span, EOS) fit `inputs_length` and the targets (noise
  tokens, one sentinel per span, EOS) fit `targets_length` (if given), for it
  and every shorter length. With T5's settings, 512 inputs take 568 tokens and
  need 114 targets.
  """
  _check_noise(noise_density, mean_noise_span_length)
  eos = int(add_eos)
  upper = int(np.ceil((inputs_length + 1) / (1.0 - noise_density))) + 2
  lengths = np.arange(2, upper + 1)
  noise, spans = (x.numpy() for x in _noise_counts(
      lengths, noise_density, mean_noise_span_length))
  inputs = lengths - noise + spans + eos
  targets = noise + spans + eos
  fits = inputs <= inputs_length
  if targets_length is not None:
    fits &= targets <= targets_length
  if not fits[0]:
    raise ValueError(f"Sequence lengths inputs={inputs_length}, targets="
                     f"{targets_length} are too short for span corruption; "
                     "give each at least 4 tokens.")
  last = len(fits) - 1 if fits.all() else int(np.argmin(fits)) - 1
  return int(lengths[last]), int(targets[last])


def _random_partition(total, parts, seed):
  """`parts` positive integers summing to `total`, uniform over all such splits."""
  cuts = seqio.utils.stateless_shuffle(tf.range(1, total), seed)[:parts - 1]
  bounds = tf.concat([[0], tf.sort(cuts), [total]], axis=0)
  return bounds[1:] - bounds[:-1]


def random_spans_noise_mask(length, noise_density: float,
                            mean_noise_span_length: float, seeds) -> tf.Tensor:
  """[length] bool, True on noise: spans alternate kept/noise, kept first.

  The numbers of noise tokens and spans are fixed by `length` (as in T5); the
  span lengths are a uniformly random split of each total. `seeds` is a pair of
  stateless seeds, each of shape [2].
  """
  noise, spans = _noise_counts(length, noise_density, mean_noise_span_length)
  noise_lengths = _random_partition(noise, spans, seeds[0])
  kept_lengths = _random_partition(length - noise, spans, seeds[1])
  span_lengths = tf.reshape(tf.stack([kept_lengths, noise_lengths], axis=1), [-1])
  return tf.repeat(tf.range(2 * spans) % 2 == 1, span_lengths)


def _spans_to_sentinels(tokens, mask, first_sentinel: int):
  """Replaces each run of masked tokens by one sentinel, counting down from `first_sentinel`."""
  starts = tf.logical_and(mask, tf.logical_not(tf.concat([[False], mask[:-1]], 0)))
  sentinels = first_sentinel + 1 - tf.cumsum(tf.cast(starts, tokens.dtype))
  keep = tf.logical_or(tf.logical_not(mask), starts)
  return tf.boolean_mask(tf.where(starts, sentinels, tokens), keep)


@seqio.map_over_dataset(num_seeds=2)
def _corrupt_spans(tokens, seeds, noise_density, mean_noise_span_length,
                   first_sentinel):
  mask = random_spans_noise_mask(tf.size(tokens), noise_density,
                                 mean_noise_span_length, seeds)
  return {
      "inputs": _spans_to_sentinels(tokens, mask, first_sentinel),
      "targets": _spans_to_sentinels(tokens, tf.logical_not(mask), first_sentinel),
  }


def _chunks(dataset: tf.data.Dataset, length: int) -> tf.data.Dataset:
  """Cuts each 1-D token tensor into pieces of `length` (the last may be shorter).

  Pieces under 2 tokens are dropped: they cannot be split into two parts.
  """

  def pieces(tokens):
    starts = tf.data.Dataset.range(0, tf.cast(tf.size(tokens), tf.int64), length)
    return starts.map(lambda start: tokens[start:start + length])

  return dataset.flat_map(pieces).filter(lambda t: tf.size(t) >= 2)


def _budgets(sequence_length, output_features) -> tuple[int, int]:
  """Token budgets of inputs and targets, less the EOS each will get."""
  if not sequence_length or not all(sequence_length.get(k) for k in
                                    ("inputs", "targets")):
    raise ValueError("This preprocessor needs sequence lengths for 'inputs' and "
                     f"'targets'; got {sequence_length}.")
  return tuple(sequence_length[k] - int(output_features[k].add_eos)
               for k in ("inputs", "targets"))


def span_corruption(dataset: tf.data.Dataset,
                    sequence_length: Mapping[str, int],
                    output_features: Mapping[str, seqio.Feature],
                    noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0,
                    texts_per_group: int = 128) -> tf.data.Dataset:
  """T5's pretraining objective on the token ids in "targets".

  Texts are concatenated (in groups of `texts_per_group`) and cut into pieces
  sized by `span_corruption_lengths`, so the corrupted inputs fill
  `sequence_length["inputs"]` and the targets fit theirs. In each piece about
  `noise_density` of the tokens, in spans of mean length
  `mean_noise_span_length`, are dropped from the inputs, each span replaced by
  a unique sentinel (the highest id first, `<extra_id_0>`); the targets hold
  each sentinel followed by the tokens it replaced. Ids already in the
  sentinel range become unk, so sentinels are never ambiguous.
  """
  vocab = output_features["targets"].vocabulary
  inputs_budget, targets_budget = _budgets(sequence_length, output_features)
  tokens_length, _ = span_corruption_lengths(
      inputs_budget, targets_budget, noise_density, mean_noise_span_length,
      add_eos=False)
  max_spans = int(_noise_counts(tokens_length, noise_density,
                                mean_noise_span_length)[1])
  if vocab.extra_ids < max_spans:
    raise ValueError(f"Span corruption needs up to {max_spans} sentinels but the "
                     f"vocabulary has {vocab.extra_ids} extra ids; load it with "
                     f"extra_ids>={max_spans}.")
  first_extra = vocab.vocab_size - vocab.extra_ids

  def tokens(example):
    ids = example["targets"]
    return tf.where(ids >= first_extra, tf.cast(vocab.unk_id, ids.dtype), ids)

  ds = dataset.map(tokens, num_parallel_calls=tf.data.AUTOTUNE)
  # Texts of one fixed length batch to a dense tensor, others to a ragged one.
  ds = ds.ragged_batch(texts_per_group).map(
      lambda group: group.flat_values if isinstance(group, tf.RaggedTensor)
      else tf.reshape(group, [-1]))
  return _corrupt_spans(_chunks(ds, tokens_length),
                        noise_density=noise_density,
                        mean_noise_span_length=mean_noise_span_length,
                        first_sentinel=vocab.vocab_size - 1)


@seqio.map_over_dataset(num_seeds=1)
def _split_at_random_point(tokens, seed, max_inputs, max_targets):
  length = tf.size(tokens)
  low = tf.maximum(1, length - max_targets)
  high = tf.minimum(length - 1, max_inputs)
  split = tf.random.stateless_uniform([], seed, minval=low, maxval=high + 1,
                                      dtype=tf.int32)
  return {"inputs": tokens[:split], "targets": tokens[split:]}


def prefix_lm(dataset: tf.data.Dataset,
              sequence_length: Mapping[str, int],
              output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
  """LM adaptation: each text's tokens ("targets") split at a uniformly random point.

  The prefix becomes the inputs and the continuation the targets. Texts longer
  than both budgets together are first cut into pieces that fit, and the split
  point is drawn among those that keep each side within its budget.
  """
  inputs_budget, targets_budget = _budgets(sequence_length, output_features)
  if min(inputs_budget, targets_budget) < 1:
    raise ValueError("prefix_lm needs room for at least one token on each side "
                     f"besides EOS; got sequence lengths {sequence_length}.")
  ds = dataset.map(lambda example: example["targets"])
  return _split_at_random_point(_chunks(ds, inputs_budget + targets_budget),
                                max_inputs=inputs_budget,
                                max_targets=targets_budget)


@seqio.map_over_dataset
def format_classification(example, fields: Mapping[str, str],
                          labels: Sequence[str], label_key: str = "label"):
  """{"inputs": "name: value ...", "targets": label word} for a classification example.

  `fields` maps each name shown in the inputs to the example's key holding the
  text (in order). The label is a string already, or an index into `labels`.
  """
  return classification_example(example, fields, labels, label_key)


def classification_example(example, fields: Mapping[str, str], labels: Sequence[str],
                           label_key: str = "label"):
  """`format_classification` of one example (templates render its fields their way)."""
  parts = []
  for name, key in fields.items():
    parts += [name + ":", example[key]]
  label = example[label_key]
  if label.dtype != tf.string:
    label = tf.gather(tf.constant(list(labels)), label)
  return {"inputs": tf.strings.join(parts, separator=" "), "targets": label}


def rank_classification(dataset: tf.data.Dataset,
                        labels: Sequence[str]) -> tf.data.Dataset:
  """One example per candidate label, for scoring each and taking the best.

  From {"inputs", "targets": label word} makes len(labels) examples with the
  same inputs, targets the candidate's label word, `idx` the example's position
  in the (unshuffled) split, `candidate` the label's index and `is_correct`.
  Grouping scores by `idx` recovers each example's prediction.
  """
  candidates = tf.constant(list(labels))
  count = len(labels)

  def expand(index, example):
    return {
        "inputs": tf.fill([count], example["inputs"]),
        "targets": candidates,
        "idx": tf.fill([count], tf.cast(index, tf.int32)),
        "candidate": tf.range(count, dtype=tf.int32),
        "is_correct": tf.equal(candidates, example["targets"]),
    }

  return dataset.enumerate().map(expand).unbatch()
