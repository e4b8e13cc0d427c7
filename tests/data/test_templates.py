"""P-tuning templates: parsing, the templated copy of a task, slot ids in the tokens."""
import numpy as np
import pytest
import seqio

from data_testing import write_tsv
from prompt_tuning.data import tasks, templates, vocab

LABELS = ["negative", "positive"]


def test_parse_reads_slots_fields_and_anchor_words():
  assert templates.parse("[P:3] {sentence} [P] It was") == [
      ("slots", 3), ("field", "sentence"), ("slots", 1), ("text", "It was")]
  assert templates.slot_count("[P:2]{inputs}[P:4]") == 6
  for bad, words in [("{inputs} It was", "no prompt slot"), ("[P:0] {inputs}", "at least one"),
                     ("[P:2] {inputs} [Q]", "bracket"), ("", "non-empty")]:
    with pytest.raises(ValueError, match=words):
      templates.parse(bad)


def test_templated_task_puts_slot_ids_where_the_template_says(tmp_path, default_vocab):
  rows = [["great fun", "positive"], ["a bore [P]", "negative"]]
  train = write_tsv(tmp_path / "train.tsv", ["text", "label"], rows)
  dev = write_tsv(tmp_path / "dev.tsv", ["text", "label"], rows)
  tasks.tsv_classification_task("tpl_reviews", train, dev, LABELS)
  v = vocab.get_vocabulary()
  slot = templates.slot_id(v)
  assert slot == v.vocab_size - 100
  text = "great <extra_id_99>"  # seqio encodes the sentinel's name as the sentinel
  assert slot in v.encode(text) and slot not in templates.encode(v, text, slot)
  with pytest.raises(ValueError, match="names field {sentence}"):
    templates.templated_task("tpl_reviews", "[P:2] {sentence}", slot)
  name = templates.templated_task("tpl_reviews", "[P:2] {text} [P] It was", slot)
  assert templates.templated_task("tpl_reviews", "[P:2] {text} [P] It was", slot) == name
  lengths = {"inputs": 64, "targets": 16}
  got = list(seqio.get_mixture_or_task(name).get_dataset(lengths, "validation", shuffle=False)
             .as_numpy_iterator())
  for ex, (text, label) in zip(got, rows):
    clean = text.replace("[P]", " ")  # a field's own markers are not slots
    want = ([slot, slot] + v.encode(clean) + [slot] + v.encode("It was") + [1])
    assert list(ex["inputs"]) == want, (text, v.decode(ex["inputs"].tolist()))
    assert ex["inputs_pretokenized"].decode().startswith("[P][P] ")
    assert list(ex["targets"]) == v.encode(label) + [1]
    assert templates.encode(v, ex["inputs_pretokenized"].decode(), slot) == want[:-1]
  rank = list(seqio.get_mixture_or_task(name + tasks.RANK_SUFFIX)
              .get_dataset(lengths, "validation", shuffle=False).as_numpy_iterator())
  assert len(rank) == 2 * len(rows)
  assert all(int(np.sum(ex["inputs"] == slot)) == 3 for ex in rank)
  assert sorted(ex["targets_pretokenized"].decode() for ex in rank[:2]) == LABELS


def test_a_whole_input_template_fits_a_task_without_fields(tmp_path, default_vocab):
  rows = [["one two three", "positive"], ["four five", "negative"]]
  train = write_tsv(tmp_path / "t.tsv", ["text", "label"], rows)
  tasks.tsv_classification_task("tpl_inputs", train, train, LABELS)
  v = vocab.get_vocabulary()
  slot = templates.slot_id(v)
  name = templates.templated_task("tpl_inputs", "{inputs} [P:2]", slot)
  ex = next(seqio.get_mixture_or_task(name).get_dataset(
      {"inputs": 32, "targets": 4}, "validation", shuffle=False).as_numpy_iterator())
  assert list(ex["inputs"]) == v.encode("text: one two three") + [slot, slot, 1]
