"""Fixtures for the data tests: a tiny SentencePiece model and a corpora cache."""
import random

import pytest

from data_testing import sentence, write_tsv
from prompt_tuning.data import vocab


@pytest.fixture(scope="session")
def tiny_spm(tmp_path_factory) -> str:
  """A 48-piece SentencePiece model trained by our own trainer."""
  directory = tmp_path_factory.mktemp("spm")
  rng = random.Random(0)
  text = directory / "text.txt"
  lines = [f"{rng.choice(['sentence', 'text'])}: {sentence(rng, 12)}."
           for _ in range(500)]
  text.write_text("\n".join(lines) + "\n")
  return vocab.train_sentencepiece(str(text), str(directory / "tiny"), 48)


@pytest.fixture
def default_vocab(tiny_spm, monkeypatch) -> str:
  """Points the tasks' default vocabulary at the tiny model."""
  monkeypatch.setenv(vocab.VOCAB_ENV, tiny_spm)
  return tiny_spm


@pytest.fixture
def corpus_cache(tmp_path, monkeypatch):
  """A corpora cache in tmp_path with small prose and rotten_tomatoes TSVs."""
  monkeypatch.setenv("PROMPT_TUNING_CACHE", str(tmp_path))
  rng = random.Random(1)
  for split in ("train", "validation"):
    write_tsv(tmp_path / "corpora" / "prose" / f"{split}.tsv", ["text"],
              [[sentence(rng, rng.randint(3, 80))] for _ in range(40)])
  for split in ("train", "validation", "test"):
    write_tsv(tmp_path / "corpora" / "rotten_tomatoes" / f"{split}.tsv",
              ["text", "label"],
              [[sentence(rng, 8), rng.choice(["negative", "positive"])]
               for _ in range(24)])
  return tmp_path
