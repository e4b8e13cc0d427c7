"""Span corruption, prefix LM and classification formatting on small tf.data inputs."""
import collections

import numpy as np
import pytest
import seqio
import tensorflow as tf

from data_testing import T5_SPM
from prompt_tuning.data import preprocessors as pp
from prompt_tuning.data import vocab


def _features(v):
  return {k: seqio.Feature(v, add_eos=True) for k in ("inputs", "targets")}


def _token_docs(docs):
  return tf.data.Dataset.from_generator(
      lambda: ({"targets": np.asarray(d, np.int32)} for d in docs),
      output_signature={"targets": tf.TensorSpec([None], tf.int32)})


def _span_corrupt(docs, v, seed, lengths=None, **kwargs):
  with seqio.map_seed_manager(seed):
    ds = pp.span_corruption(_token_docs(docs), lengths or {"inputs": 64, "targets": 32},
                            _features(v), **kwargs)
  return list(ds.as_numpy_iterator())


def _reconstruct(inputs, targets, first_sentinel_range):
  """Puts each target span back where its sentinel sits in the inputs."""
  assert targets[0] >= first_sentinel_range
  spans, current = {}, None
  for t in targets:
    if t >= first_sentinel_range:
      current = spans.setdefault(int(t), [])
    else:
      current.append(int(t))
  out = []
  for t in inputs:
    out.extend(spans.pop(int(t)) if t >= first_sentinel_range else [int(t)])
  assert not spans, "every target span has its sentinel in the inputs"
  return out


@pytest.fixture
def tiny_vocab(tiny_spm):
  return vocab.get_vocabulary(tiny_spm)


def test_span_corruption_lengths_match_t5():
  # The T5 paper's setting: 512 input tokens come from 568 raw tokens, 114 targets.
  assert pp.span_corruption_lengths(512) == (568, 114)
  assert pp.span_corruption_lengths(512, 114) == (568, 114)
  tokens, targets = pp.span_corruption_lengths(512, 60)
  assert targets <= 60 and pp.span_corruption_lengths(512, 59)[0] <= tokens < 568
  with pytest.raises(ValueError, match="too short"):
    pp.span_corruption_lengths(2, 2)
  with pytest.raises(ValueError, match="noise_density"):
    pp.span_corruption_lengths(512, noise_density=1.5)


def test_span_corruption_reconstructs_the_text(tiny_vocab):
  rng = np.random.default_rng(0)
  docs = [rng.integers(3, 48, size=rng.integers(1, 120)) for _ in range(100)]
  examples = _span_corrupt(docs, tiny_vocab, seed=3)
  first = tiny_vocab.vocab_size - 100
  tokens_length, _ = pp.span_corruption_lengths(63, 31, add_eos=False)
  stream = []
  for ex in examples:
    assert len(ex["inputs"]) <= 63 and len(ex["targets"]) <= 31
    sentinels = [t for t in ex["inputs"] if t >= first]
    assert sentinels == list(range(tiny_vocab.vocab_size - 1,
                                   tiny_vocab.vocab_size - 1 - len(sentinels), -1))
    assert [t for t in ex["targets"] if t >= first] == sentinels
    stream += _reconstruct(ex["inputs"], ex["targets"], first)
  expected = np.concatenate(docs).tolist()
  if len(expected) % tokens_length == 1:  # a one-token tail is dropped
    expected = expected[:-1]
  assert stream == expected


def test_span_corruption_statistics_over_10k_examples(tiny_vocab):
  tokens_length, _ = pp.span_corruption_lengths(512)
  docs = np.random.default_rng(1).integers(3, 48, size=(10_000, tokens_length))
  ds = tf.data.Dataset.from_tensor_slices({"targets": docs.astype(np.int32)})
  with seqio.map_seed_manager(7):
    out = pp.span_corruption(ds, {"inputs": 512, "targets": 114}, _features(tiny_vocab))
  first = tiny_vocab.vocab_size - 100
  noise = spans = examples = 0
  span_lengths = collections.Counter()
  for ex in out.as_numpy_iterator():
    is_sentinel = ex["targets"] >= first
    starts = np.flatnonzero(is_sentinel)
    lengths = np.diff(np.append(starts, len(ex["targets"]))) - 1
    span_lengths.update(lengths.tolist())
    noise += int(lengths.sum())
    spans += len(starts)
    examples += 1
  assert examples == 10_000
  assert noise / (examples * tokens_length) == pytest.approx(0.15, rel=0.05)
  assert noise / spans == pytest.approx(3.0, rel=0.05)
  assert min(span_lengths) >= 1 and len(span_lengths) > 4, "span lengths vary"


def test_span_corruption_is_a_function_of_the_seed(tiny_vocab):
  rng = np.random.default_rng(2)
  docs = [rng.integers(3, 48, size=90) for _ in range(20)]
  runs = [_span_corrupt(docs, tiny_vocab, seed) for seed in (5, 5, 6)]
  flat = [np.concatenate([ex["inputs"] for ex in run]) for run in runs]
  assert np.array_equal(flat[0], flat[1])
  assert not np.array_equal(flat[0], flat[2])


def test_span_corruption_needs_enough_sentinels(tiny_spm):
  with pytest.raises(ValueError, match="extra ids"):
    _span_corrupt([[5, 6, 7]], vocab.get_vocabulary(tiny_spm, extra_ids=10), seed=1,
                  lengths={"inputs": 512, "targets": 114})


@pytest.mark.skipif(not T5_SPM.exists(), reason="reference T5 SentencePiece model absent")
def test_sentinels_never_collide_with_text_tokens():
  v = vocab.get_vocabulary(str(T5_SPM))
  first = v.vocab_size - 100
  plain = ["Soft prompts condition a frozen model.",
           "Ünïcödé, numbers 12,345 and <brackets> stay below the sentinels.",
           "extra_id_0 written without brackets is ordinary text"]
  for text in plain:
    assert max(v.encode(text)) < first
  literal = v.encode("The film <extra_id_5> was great, said the critic.")
  assert v.vocab_size - 1 - 5 in literal  # text can spell a sentinel ...
  docs = [v.encode(t) for t in plain * 4] + [literal]
  examples = _span_corrupt(docs, v, seed=1, lengths={"inputs": 24, "targets": 12})
  stream = []
  for ex in examples:
    sentinels = [t for t in ex["inputs"] if t >= first]
    # ... but only inserted sentinels, one per span in order, remain.
    assert sentinels == list(range(v.vocab_size - 1, v.vocab_size - 1 - len(sentinels), -1))
    stream += _reconstruct(ex["inputs"], ex["targets"], first)
  expected = [v.unk_id if t >= first else t for t in np.concatenate(docs)]
  assert stream == expected[:len(stream)] and len(stream) >= len(expected) - 1


def _prefix_lm(docs, lengths, seed, v):
  with seqio.map_seed_manager(seed):
    ds = pp.prefix_lm(_token_docs(docs), lengths, _features(v))
  return list(ds.as_numpy_iterator())


def test_prefix_lm_splits_each_piece_within_budgets(tiny_vocab):
  rng = np.random.default_rng(3)
  docs = [rng.integers(3, 48, size=n) for n in (1, 2, 14, 15, 40)]
  examples = _prefix_lm(docs, {"inputs": 10, "targets": 6}, 0, tiny_vocab)
  pieces = [ex["inputs"].tolist() + ex["targets"].tolist() for ex in examples]
  expected = [docs[1], docs[2], docs[3][:14], docs[4][:14], docs[4][14:28], docs[4][28:]]
  assert pieces == [d.tolist() for d in expected]
  for ex in examples:
    assert 1 <= len(ex["inputs"]) <= 9 and 1 <= len(ex["targets"]) <= 5


def test_prefix_lm_split_point_is_uniform(tiny_vocab):
  docs = [np.arange(3, 13)] * 2700  # 10 tokens: split after 1..9 tokens
  splits = [len(ex["inputs"]) for ex in
            _prefix_lm(docs, {"inputs": 20, "targets": 20}, 4, tiny_vocab)]
  counts = collections.Counter(splits)
  assert sorted(counts) == list(range(1, 10))
  assert all(abs(c - 300) < 75 for c in counts.values()), counts
  other = [len(ex["inputs"]) for ex in
           _prefix_lm(docs[:50], {"inputs": 20, "targets": 20}, 5, tiny_vocab)]
  assert other != splits[:50]


def test_format_classification_with_words_and_indices():
  words = tf.data.Dataset.from_tensors({"text": "a fine film", "label": "positive"})
  out = next(pp.format_classification(
      words, fields={"sentence": "text"}, labels=["negative", "positive"]
  ).as_numpy_iterator())
  assert out == {"inputs": b"sentence: a fine film", "targets": b"positive"}
  indices = tf.data.Dataset.from_tensors(
      {"premise": "It rained.", "hypothesis": "It was wet.", "label": tf.constant(2, tf.int64)})
  out = next(pp.format_classification(
      indices, fields={"premise": "premise", "hypothesis": "hypothesis"},
      labels=["entailment", "contradiction", "neutral"]).as_numpy_iterator())
  assert out == {"inputs": b"premise: It rained. hypothesis: It was wet.",
                 "targets": b"neutral"}


def test_rank_classification_makes_one_example_per_label():
  ds = tf.data.Dataset.from_tensor_slices({"inputs": ["x: one", "x: two"],
                                           "targets": ["c", "a"]})
  out = list(pp.rank_classification(ds, ["a", "b", "c"]).as_numpy_iterator())
  assert [ex["inputs"] for ex in out] == [b"x: one"] * 3 + [b"x: two"] * 3
  assert [ex["targets"] for ex in out] == [b"a", b"b", b"c"] * 2
  assert [int(ex["idx"]) for ex in out] == [0, 0, 0, 1, 1, 1]
  assert [int(ex["candidate"]) for ex in out] == [0, 1, 2] * 2
  assert [bool(ex["is_correct"]) for ex in out] == [False, False, True, True, False, False]
