"""Tests of the multi-task mixture: templates, mixing rates, what it leaves out."""
import collections

import pytest
import seqio
import tensorflow as tf

from prompt_tuning.data import corpora
from prompt_tuning.data import multitask


def _render(corpus, texts, seed=0):
  ds = tf.data.Dataset.from_tensor_slices(
      {"text": texts, "label": ["positive"] * len(texts)})
  with seqio.utils.map_seed_manager(seed):
    out = multitask.apply_template(ds, templates=multitask.templates_for(corpus))
  return [(ex["inputs"].decode(), ex["targets"].decode()) for ex in out.as_numpy_iterator()]


def test_every_template_is_drawn_and_wraps_the_text():
  rendered = _render("word_sentiment", ["lovely"] * 300)
  templates = multitask.templates_for("word_sentiment")
  counts = collections.Counter(rendered)
  expected = {(before + "lovely" + after, "positive") for before, after in templates}
  assert set(counts) == expected
  assert min(counts.values()) > 300 / len(templates) / 2
  assert ("lovely Options: negative, positive.", "positive") in counts


def test_templates_are_a_function_of_the_seed():
  texts = [f"text number {i}" for i in range(50)]
  assert _render("bbc_news", texts, seed=3) == _render("bbc_news", texts, seed=3)
  assert _render("bbc_news", texts, seed=3) != _render("bbc_news", texts, seed=4)


def test_long_texts_are_cut_before_the_template():
  words = [f"w{i}" for i in range(500)]
  for inputs, _ in _render("newsgroups20", [" ".join(words)] * 20):
    assert f"w{multitask.MAX_WORDS - 1} " in inputs + " "
    assert f"w{multitask.MAX_WORDS} " not in inputs + " "


def test_rates_are_examples_proportional_with_a_cap(monkeypatch):
  rows = {c: 1000 * (i + 1) for i, c in enumerate(multitask.SOURCES)}
  monkeypatch.setattr(multitask, "train_rows", rows.__getitem__)
  for corpus, n in rows.items():
    assert multitask.source_rate(corpus) == min(n, multitask.MIXTURE_CAP)
  supervised = sum(min(n, multitask.MIXTURE_CAP) for n in rows.values())
  lm = multitask.lm_rate()
  assert lm / (lm + supervised) == pytest.approx(multitask.LM_SHARE)
  mixture = seqio.get_mixture_or_task(multitask.MIXTURE_NAME)
  rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  assert rates[multitask.LM_TASK] == pytest.approx(lm)
  assert rates["multitask_bbc_news"] == multitask.source_rate("bbc_news")


def test_the_mixture_holds_out_the_targets():
  mixture = seqio.get_mixture_or_task(multitask.MIXTURE_NAME)
  names = {t.name for t in mixture.tasks}
  assert names == {multitask.TASK_PREFIX + c for c in multitask.SOURCES} | {multitask.LM_TASK}
  for held_out in corpora.HELD_OUT:
    assert not any(held_out in name for name in names)
  assert set(multitask.SOURCES) <= set(corpora.CORPORA)
