"""Header-first TSV files: checked in Python at the edge, read by tf.data.

One format serves the offline corpora and users' own classification data: UTF-8,
a header row naming the columns, one example per line, fields separated by tabs
(no tabs or newlines inside a field).
"""
import os
from typing import Callable, Iterator, Mapping, Optional, Sequence, Union

import seqio
import tensorflow as tf

PathOrFn = Union[str, Callable[[], str]]

# Files up to this many rows are shuffled whole; the corpora hold about 10k.
MAX_SHUFFLE_ROWS = 200_000
_SCAN_CACHE = {}


def _require_file(path: str) -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"TSV file {path} does not exist (or is not a "
                            "file); check the path.")


def _lines(path: str) -> Iterator[tuple[int, list[str]]]:
  """(line number, fields) for every line of `path`, header included."""
  _require_file(path)
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{lineno} is not valid UTF-8 ({e}); "
                         "save the file as UTF-8.") from None
      yield lineno, line.removesuffix("\n").removesuffix("\r").split("\t")


def read_header(path: str) -> list[str]:
  """The column names on the first line of `path`."""
  for _, fields in _lines(path):
    return fields
  raise ValueError(f"TSV file {path} is empty; it needs a header row naming "
                   "its columns, then one example per line.")


def _indices(path: str, header: list[str], columns: Sequence[str]) -> list[int]:
  for column in columns:
    if column not in header:
      raise ValueError(f"TSV file {path} has no column {column!r}; its header "
                       f"has columns {header}. Rename the column in the file or "
                       "pass the column's name.")
  return [header.index(c) for c in columns]


def column_indices(path: str, columns: Sequence[str]) -> list[int]:
  """Where each of `columns` sits in the header of `path`."""
  return _indices(path, read_header(path), columns)


def scan_tsv(path: str,
             columns: Sequence[str],
             labels: Optional[Sequence[str]] = None,
             label_column: Optional[str] = None) -> int:
  """Checks every row of `path` and returns how many examples it holds.

  Raises a ValueError naming the file and line for a missing column, a row with
  the wrong number of fields, a label outside `labels` or a file without rows.
  Results are cached per file version (size and modification time).
  """
  _require_file(path)
  stat = os.stat(path)
  key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, tuple(columns),
         tuple(labels or ()), label_column)
  if key in _SCAN_CACHE:
    return _SCAN_CACHE[key]

  header = read_header(path)
  indices = _indices(path, header, list(columns) + ([label_column] if label_column else []))
  label_index = indices[-1] if label_column else None
  allowed = set(labels or ())
  rows = 0
  for lineno, fields in _lines(path):
    if lineno == 1:
      continue
    if len(fields) != len(header):
      raise ValueError(
          f"{path}:{lineno} has {len(fields)} tab-separated fields but the "
          f"header has {len(header)} ({header}); fields must not contain tabs "
          "or newlines.")
    if label_index is not None and fields[label_index] not in allowed:
      raise ValueError(
          f"{path}:{lineno} has label {fields[label_index]!r}, which is not one "
          f"of the labels {list(labels)}; fix the row or add the label.")
    rows += 1
  if rows == 0:
    raise ValueError(f"TSV file {path} has a header but no examples; an empty "
                     "split cannot be used, add rows or leave the split out.")
  _SCAN_CACHE[key] = rows
  return rows


def iter_column(path: str, column: str) -> Iterator[str]:
  """The values of one column of `path`, row by row, after `scan_tsv` checks the file."""
  scan_tsv(path, [column])
  (index,) = column_indices(path, [column])
  for lineno, fields in _lines(path):
    if lineno > 1:
      yield fields[index]


class TsvDataSource(seqio.DataSource):
  """A seqio source of examples {column: tf.string} read from one TSV per split.

  Paths may be callables, resolved when the data is read, so a task can be
  registered before its files exist. Every file is checked with `scan_tsv`
  before tf.data reads it. With `shuffle`, rows come in a new seeded order each
  epoch (a buffer of up to `MAX_SHUFFLE_ROWS` lines), so the Task's own shuffle
  buffer after preprocessing can stay small.
  """

  def __init__(self,
               split_to_path: Mapping[str, PathOrFn],
               columns: Sequence[str],
               labels: Optional[Sequence[str]] = None,
               label_column: Optional[str] = None):
    self._split_to_path = dict(split_to_path)
    self._columns = list(columns)
    self._labels = list(labels) if labels is not None else None
    self._label_column = label_column
    super().__init__(splits=self._split_to_path.keys())

  def path(self, split: str) -> str:
    if split not in self._split_to_path:
      raise ValueError(f"Unknown split {split!r}; this data has the splits "
                       f"{list(self._split_to_path)}.")
    path = self._split_to_path[split]
    return path() if callable(path) else path

  def _check(self, split: str) -> tuple[str, int]:
    path = self.path(split)
    return path, scan_tsv(path, self._columns, self._labels, self._label_column)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> Sequence[str]:
    return [self.path(split)]

  def num_rows(self, split: str) -> int:
    """Examples in a split (checks its file)."""
    return self._check(split)[1]

  def num_input_examples(self, split: str) -> None:
    """None on purpose: given a size under 10k, seqio caches the first epoch in
    memory and replays its order, undoing the per-epoch shuffle. See num_rows."""
    return None

  def get_dataset(self,
                  split: str = "train",
                  shuffle: bool = True,
                  seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None,
                  *,
                  sequence_length=None,
                  use_cached: bool = False,
                  num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs
    path, rows = self._check(split)
    names = self._columns + ([self._label_column] if self._label_column else [])
    indices = column_indices(path, names)
    ds = tf.data.TextLineDataset(path).skip(1)
    if shard_info:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    if shuffle:
      ds = ds.shuffle(min(rows, MAX_SHUFFLE_ROWS), seed=seed,
                      reshuffle_each_iteration=True)

    def parse(line):
      fields = tf.strings.split(tf.strings.regex_replace(line, "\r$", ""), "\t")
      return {name: fields[i] for name, i in zip(names, indices)}

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
