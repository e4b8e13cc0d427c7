"""Registered tasks: corpora, GLUE/SuperGLUE on mocked TFDS, and users' TSV tasks."""
import gin
import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from data_testing import write_tsv
import prompt_tuning.data  # registers the tasks
from prompt_tuning.data import corpora
from prompt_tuning.data import metrics
from prompt_tuning.data import tasks

LABELS = ["negative", "positive"]
CLASSIFICATION = list(tasks.CORPUS_FIELD) + list(tasks.TFDS_TASKS)


def _examples(name, split="validation", lengths=None, count=None):
  ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split, shuffle=False, seed=0)
  return list((ds.take(count) if count else ds).as_numpy_iterator())


def test_importing_registers_every_task_once():
  names = set(seqio.TaskRegistry.names())
  expected = {"pretrain_span_corruption", "lm_adaptation_prefix_lm"}
  expected |= {n + s for n in CLASSIFICATION for s in ("", tasks.RANK_SUFFIX)}
  assert expected <= names
  before = {n: seqio.TaskRegistry.get(n) for n in expected}
  tasks.register_all()
  assert all(seqio.TaskRegistry.get(n) is t for n, t in before.items())


def test_metrics_follow_the_number_of_labels():
  assert seqio.TaskRegistry.get("rotten_tomatoes").metric_fns == [metrics.accuracy]
  assert seqio.TaskRegistry.get("newsgroups20").metric_fns == [metrics.accuracy,
                                                               metrics.macro_f1]
  rank = seqio.TaskRegistry.get("super_glue_cb" + tasks.RANK_SUFFIX)
  assert rank.score_metric_fns[0].keywords == {
      "num_classes": 3, "labels": ["entailment", "contradiction", "neutral"]}
  assert rank.postprocessor is metrics.rank_classification_target


def test_unprepared_corpus_says_run_prepare_data(tmp_path, monkeypatch, default_vocab):
  monkeypatch.setenv("PROMPT_TUNING_CACHE", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="prepare_data.py --corpora reuters_r8"):
    _examples("reuters_r8")


def test_rotten_tomatoes_as_text_to_text(corpus_cache, default_vocab):
  path = corpora.corpus_path("rotten_tomatoes", "validation")
  rows = [line.rstrip("\n").split("\t") for line in open(path).readlines()[1:]]
  examples = _examples("rotten_tomatoes", lengths={"inputs": 64, "targets": 8})
  assert len(examples) == len(rows)
  vocab = tasks.task_vocabulary()
  for ex, (text, label) in zip(examples, rows):
    assert ex["inputs_pretokenized"].decode() == f"sentence: {text}"
    assert ex["targets_pretokenized"].decode() == label
    assert ex["inputs"][-1] == vocab.eos_id and ex["targets"][-1] == vocab.eos_id
    assert vocab.decode(ex["inputs"][:-1].tolist()) == f"sentence: {text}"
  rank = _examples("rotten_tomatoes" + tasks.RANK_SUFFIX)
  assert len(rank) == 2 * len(rows)
  assert [bool(ex["is_correct"]) for ex in rank[:2]] == [l == rows[0][1] for l in LABELS]


def test_pretraining_tasks_on_prose(corpus_cache, default_vocab):
  vocab = tasks.task_vocabulary()
  lengths = {"inputs": 32, "targets": 12}
  corrupted = _examples("pretrain_span_corruption", "train", lengths, count=20)
  for ex in corrupted:
    assert len(ex["inputs"]) <= 32 and len(ex["targets"]) <= 12
    assert ex["inputs"][-1] == vocab.eos_id and ex["targets"][-1] == vocab.eos_id
    assert ex["targets"][0] == vocab.vocab_size - 1  # <extra_id_0> opens the targets
  assert max(len(ex["inputs"]) for ex in corrupted) == 32
  docs = [line.rstrip("\n") for line in
          open(corpora.corpus_path("prose", "train")).readlines()[1:]]
  doc_tokens = [",".join(map(str, vocab.encode(d))) for d in docs]
  for ex in _examples("lm_adaptation_prefix_lm", "train", lengths, count=20):
    assert ex["inputs"][-1] == vocab.eos_id and ex["targets"][-1] == vocab.eos_id
    piece = ",".join(map(str, np.concatenate([ex["inputs"][:-1], ex["targets"][:-1]])))
    assert any(piece in d for d in doc_tokens)


@pytest.mark.parametrize("name", list(tasks.TFDS_TASKS))
def test_glue_and_super_glue_in_taskless_form(name, default_vocab, monkeypatch):
  _, fields, labels = tasks.TFDS_TASKS[name]
  # Mocked TFDS has no split metadata, so it cannot report split sizes.
  monkeypatch.setattr(seqio.TfdsDataSource, "num_input_examples", lambda *_: None)
  with tfds.testing.mock_data(num_examples=3):
    examples = _examples(name, lengths={"inputs": 128, "targets": 8})
    rank = _examples(name + tasks.RANK_SUFFIX, lengths={"inputs": 128, "targets": 8})
  assert len(examples) == 3 and len(rank) == 3 * len(labels)
  for ex in examples:
    inputs = ex["inputs_pretokenized"].decode()
    positions = [inputs.find(f"{field}:") for field in fields]
    assert positions[0] == 0 and positions == sorted(positions), inputs
    assert ex["targets_pretokenized"].decode() in labels
  assert sum(bool(ex["is_correct"]) for ex in rank) == 3


def _user_files(tmp_path, labels=LABELS):
  rows = [["great fun", labels[1]], ["a bore", labels[0]], ["so good", labels[1]]]
  return (write_tsv(tmp_path / "train.tsv", ["text", "label"], rows),
          write_tsv(tmp_path / "dev.tsv", ["text", "label"], rows[:2]))


def test_tsv_classification_task_registers_idempotently(tmp_path, default_vocab):
  train, dev = _user_files(tmp_path)
  task = prompt_tuning.data.tsv_classification_task("my_reviews", train, dev, LABELS)
  assert seqio.TaskRegistry.get("my_reviews") is task
  assert tasks.tsv_classification_task("my_reviews", train, dev, LABELS) is task
  examples = _examples("my_reviews")
  assert [ex["inputs_pretokenized"] for ex in examples] == [b"text: great fun", b"text: a bore"]
  assert len(_examples("my_reviews" + tasks.RANK_SUFFIX)) == 4

  replaced = tasks.tsv_classification_task("my_reviews", train, dev, LABELS[::-1])
  assert replaced is not task and seqio.TaskRegistry.get("my_reviews") is replaced
  rank = _examples("my_reviews" + tasks.RANK_SUFFIX)
  assert [ex["targets_pretokenized"] for ex in rank[:2]] == [b"positive", b"negative"]
  with pytest.raises(ValueError, match="already registered by other code"):
    tasks.tsv_classification_task("rotten_tomatoes", train, dev, LABELS)


def test_tsv_classification_task_rejects_bad_input(tmp_path, default_vocab):
  train, dev = _user_files(tmp_path)
  with pytest.raises(ValueError, match=r"train.tsv:3 has label 'negative'"):
    tasks.tsv_classification_task("bad_labels", train, dev, ["positive", "neutral"])
  with pytest.raises(ValueError, match="no column 'review'"):
    tasks.tsv_classification_task("bad_column", train, dev, LABELS, text_column="review")
  empty = write_tsv(tmp_path / "test.tsv", ["text", "label"], [])
  with pytest.raises(ValueError, match="test.tsv has a header but no examples"):
    tasks.tsv_classification_task("bad_test", train, dev, LABELS, test=empty)
  with pytest.raises(FileNotFoundError, match="nope.tsv"):
    tasks.tsv_classification_task("bad_path", str(tmp_path / "nope.tsv"), dev, LABELS)
  with pytest.raises(ValueError, match="at least two distinct"):
    tasks.tsv_classification_task("bad_label_list", train, dev, ["positive"])
  with pytest.raises(TypeError, match="list of label strings"):
    tasks.tsv_classification_task("bad_label_type", train, dev, "positive")
  assert not {"bad_labels", "bad_column", "bad_test", "bad_path"} & set(seqio.TaskRegistry.names())


def test_tsv_classification_task_is_gin_configurable(tmp_path, default_vocab):
  train, dev = _user_files(tmp_path)
  try:
    gin.parse_config([
        "tsv_classification_task.name = 'gin_reviews'",
        f"tsv_classification_task.train = '{train}'",
        f"tsv_classification_task.validation = '{dev}'",
        f"tsv_classification_task.labels = {LABELS}",
    ])
    task = tasks.tsv_classification_task()
  finally:
    gin.clear_config()
  assert task.name == "gin_reviews" and task.splits == ("train", "validation")


def test_tsv_text_task_cuts_your_texts_with_either_objective(tmp_path, default_vocab):
  vocab = tasks.task_vocabulary()
  texts = ["the film is a long and tender look at a family that will not speak",
           "an hour of noise with a plot that never once finds its feet",
           "funny and sad at once, and better for it"]
  train = write_tsv(tmp_path / "train.tsv", ["label", "review"],
                    [["positive", texts[0]], ["negative", texts[1]], ["positive", texts[2]]])
  dev = write_tsv(tmp_path / "dev.tsv", ["label", "review"], [["positive", texts[2]]])
  lengths = {"inputs": 16, "targets": 16}
  encoded = [",".join(map(str, vocab.encode(t))) for t in texts]

  prefix = prompt_tuning.data.tsv_text_task("my_text_lm", train, dev, text_column="review")
  assert tasks.tsv_text_task("my_text_lm", train, dev, text_column="review") is prefix
  examples = _examples("my_text_lm", "train", lengths)
  assert len(examples) >= 3
  for ex in examples:
    assert ex["inputs"][-1] == vocab.eos_id and ex["targets"][-1] == vocab.eos_id
    # The prefix and its continuation are one contiguous piece of one text.
    piece = ",".join(map(str, np.concatenate([ex["inputs"][:-1], ex["targets"][:-1]])))
    assert any(piece in e for e in encoded), piece
  assert "label" not in examples[0] and "review" not in examples[0]

  spans = tasks.tsv_text_task("my_text_spans", train, dev, objective="span_corruption",
                              text_column="review")
  assert spans is not prefix
  for ex in _examples("my_text_spans", "validation", lengths):
    assert ex["targets"][0] == vocab.vocab_size - 1  # <extra_id_0> opens the targets
    assert vocab.vocab_size - 1 in ex["inputs"]

  # Other arguments replace the task; a name other code registered is refused.
  replaced = tasks.tsv_text_task("my_text_lm", train, dev, objective="span_corruption",
                                 text_column="review")
  assert replaced is not prefix and seqio.TaskRegistry.get("my_text_lm") is replaced
  with pytest.raises(ValueError, match="already registered by other code"):
    tasks.tsv_text_task("lm_adaptation_prefix_lm", train, dev, text_column="review")


def test_tsv_text_task_rejects_bad_input(tmp_path, default_vocab):
  train, dev = _user_files(tmp_path)
  with pytest.raises(ValueError, match=r"Unknown objective 'mlm'.*prefix_lm"):
    tasks.tsv_text_task("bad_objective", train, dev, objective="mlm")
  with pytest.raises(ValueError, match="no column 'review'"):
    tasks.tsv_text_task("bad_text_column", train, dev, text_column="review")
  with pytest.raises(FileNotFoundError, match="nope.tsv"):
    tasks.tsv_text_task("bad_text_path", train, str(tmp_path / "nope.tsv"))
  assert not ({"bad_objective", "bad_text_column", "bad_text_path"}
              & set(seqio.TaskRegistry.names()))


def test_tsv_text_task_is_gin_configurable(tmp_path, default_vocab):
  train, dev = _user_files(tmp_path)
  try:
    gin.parse_config([
        "tsv_text_task.name = 'gin_text'",
        f"tsv_text_task.train = '{train}'",
        f"tsv_text_task.validation = '{dev}'",
        "tsv_text_task.objective = 'span_corruption'",
    ])
    task = tasks.tsv_text_task()
  finally:
    gin.clear_config()
  assert task.name == "gin_text" and task.splits == ("train", "validation")
