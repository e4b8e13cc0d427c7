"""Helpers shared by the data tests: words to make text from, TSV writing, references."""
import os
import random

# The repository's neighbour folder of reference files (see tests/conftest.py).
from repo_paths import SHARED_REFERENCE  # noqa: E402
T5_SPM = SHARED_REFERENCE / "t5_sentencepiece.model"

WORDS = ("the quick brown fox jumps over a lazy dog while this movie was great "
         "and that plot felt terrible but every actor made the story work").split()


def sentence(rng: random.Random, words: int) -> str:
  return " ".join(rng.choice(WORDS) for _ in range(words))


def write_tsv(path, header, rows) -> str:
  """Writes a header-first TSV (header and rows are lists of fields)."""
  os.makedirs(os.path.dirname(str(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for fields in [header] + list(rows):
      f.write("\t".join(fields) + "\n")
  return str(path)
