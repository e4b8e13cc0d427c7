"""TSV checks at the edge, and the seqio source that reads the files."""
import pytest
import seqio

from data_testing import write_tsv
from prompt_tuning.data import tsv

LABELS = ["negative", "positive"]


def _rows(source, split, **kwargs):
  return list(source.get_dataset(split, shuffle=False, **kwargs).as_numpy_iterator())


def test_source_reads_the_named_columns_in_order(tmp_path):
  path = write_tsv(tmp_path / "a.tsv", ["id", "label", "text"],
                   [["1", "positive", "good film"], ["2", "negative", "dull, slow"]])
  source = tsv.TsvDataSource({"train": path}, ["text"], LABELS, "label")
  assert source.num_rows("train") == 2
  assert _rows(source, "train") == [{"text": b"good film", "label": b"positive"},
                                    {"text": b"dull, slow", "label": b"negative"}]
  with pytest.raises(ValueError, match="Unknown split 'test'"):
    source.get_dataset("test")


def test_crlf_line_ends_and_sharding(tmp_path):
  path = tmp_path / "crlf.tsv"
  path.write_bytes(b"text\r\none\r\ntwo\r\nthree\r\n")
  source = tsv.TsvDataSource({"train": str(path)}, ["text"])
  assert [r["text"] for r in _rows(source, "train")] == [b"one", b"two", b"three"]
  shard = _rows(source, "train", shard_info=seqio.ShardInfo(index=1, num_shards=2))
  assert [r["text"] for r in shard] == [b"two"]


def test_shuffle_reorders_each_epoch_from_the_seed(tmp_path):
  path = write_tsv(tmp_path / "n.tsv", ["text"], [[str(i)] for i in range(50)])
  source = tsv.TsvDataSource({"train": path}, ["text"])

  def two_epochs(seed):
    ds = source.get_dataset("train", shuffle=True, seed=seed).repeat(2)
    return [int(r["text"]) for r in ds.as_numpy_iterator()]

  order = two_epochs(1)
  assert sorted(order[:50]) == sorted(order[50:]) == list(range(50))
  assert order[:50] != order[50:] and order[:50] != list(range(50))
  assert two_epochs(1) == order and two_epochs(2) != order


def test_missing_column_names_column_file_and_header(tmp_path):
  path = write_tsv(tmp_path / "cols.tsv", ["sentence", "label"], [["hi", "positive"]])
  with pytest.raises(ValueError) as error:
    tsv.scan_tsv(path, ["text"], LABELS, "label")
  message = str(error.value)
  assert "'text'" in message and path in message and "['sentence', 'label']" in message


def test_label_outside_labels_names_label_file_and_line(tmp_path):
  path = write_tsv(tmp_path / "labels.tsv", ["text", "label"],
                   [["a", "positive"], ["b", "neutral"]])
  with pytest.raises(ValueError, match=rf"{path}:3 has label 'neutral'"):
    tsv.scan_tsv(path, ["text"], LABELS, "label")


def test_empty_split_missing_file_and_bad_rows(tmp_path):
  empty = write_tsv(tmp_path / "empty.tsv", ["text", "label"], [])
  with pytest.raises(ValueError, match="no examples"):
    tsv.scan_tsv(empty, ["text"], LABELS, "label")
  no_header = tmp_path / "blank.tsv"
  no_header.write_text("")
  with pytest.raises(ValueError, match="empty; it needs a header"):
    tsv.scan_tsv(str(no_header), ["text"])
  with pytest.raises(FileNotFoundError, match="absent.tsv"):
    tsv.scan_tsv(str(tmp_path / "absent.tsv"), ["text"])
  extra_tab = write_tsv(tmp_path / "tabs.tsv", ["text", "label"],
                        [["a", "positive"], ["b\tc", "positive"]])
  with pytest.raises(ValueError, match=r"tabs.tsv:3 has 3 tab-separated fields"):
    tsv.scan_tsv(extra_tab, ["text"], LABELS, "label")


def test_source_checks_files_when_read(tmp_path):
  path = tmp_path / "late.tsv"
  source = tsv.TsvDataSource({"train": lambda: str(path)}, ["text"])
  with pytest.raises(FileNotFoundError, match="late.tsv"):
    source.get_dataset("train")
  write_tsv(path, ["text"], [["now here"]])
  assert _rows(source, "train") == [{"text": b"now here"}]


def test_iter_column(tmp_path):
  path = write_tsv(tmp_path / "c.tsv", ["label", "text"], [["x", "one"], ["y", "two"]])
  assert list(tsv.iter_column(path, "text")) == ["one", "two"]
