"""The SentencePiece vocabulary of T5: loading one, and training a new one.

T5 numbers its pieces pad 0, eos 1, unk 2 (no bos) and appends 100 sentinel
ids `<extra_id_0>` ... `<extra_id_99>` at the top, `<extra_id_0>` highest, so
the public model's 32000 pieces become a 32100-id vocabulary.
"""
import functools
import os
import pathlib
from typing import Iterator, Optional

import seqio
import sentencepiece as spm

from prompt_tuning.data import tsv

DEFAULT_EXTRA_IDS = 100
# The default model file: this variable, else the one shipped with the package.
VOCAB_ENV = "PROMPT_TUNING_VOCAB"
PACKAGED_VOCAB = pathlib.Path(__file__).resolve().parent.parent / "assets" / "spiece.model"
T5_SPECIAL_IDS = {"pad": 0, "eos": 1, "unk": 2}


def default_vocab_path() -> str:
  """The model file used when none is named: $PROMPT_TUNING_VOCAB, else the packaged one."""
  path = os.environ.get(VOCAB_ENV)
  if path:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"${VOCAB_ENV} names {path}, which is not a file; "
                              "point it at a SentencePiece .model file.")
    return path
  if PACKAGED_VOCAB.is_file():
    return str(PACKAGED_VOCAB)
  raise FileNotFoundError(
      "No SentencePiece model is configured: pass a path, set "
      f"{VOCAB_ENV}=/path/to/spiece.model (e.g. the model shipped with a T5 "
      "checkpoint), or train one with scripts/train_spm.py.")


class T5Vocabulary(seqio.SentencePieceVocabulary):
  """A seqio SentencePiece vocabulary that checks T5's id conventions on load.

  With `path=None` the model file is looked up with `default_vocab_path()` each
  time the model is needed, so tasks can be registered before one is set up.
  """

  def __init__(self, path: Optional[str] = None, extra_ids: int = DEFAULT_EXTRA_IDS):
    self._follows_default = path is None
    super().__init__(path or "", extra_ids=extra_ids)

  def _model_context(self):
    if self._follows_default:
      path = default_vocab_path()
      if path != self._sentencepiece_model_file:
        self._sentencepiece_model_file, self._model = path, None
    if self._model is None:
      context = super()._model_context()
      tokenizer = context.tokenizer
      found = {"pad": tokenizer.pad_id(), "eos": tokenizer.eos_id(),
               "unk": tokenizer.unk_id()}
      if found != T5_SPECIAL_IDS:
        self._model = None
        raise ValueError(
            f"SentencePiece model {self._sentencepiece_model_file} has special "
            f"ids {found}, but T5 needs {T5_SPECIAL_IDS}; train a model with "
            "scripts/train_spm.py, which follows T5's conventions.")
    return super()._model_context()

  @property
  def sentencepiece_model_file(self) -> str:
    self._model_context()
    return self._sentencepiece_model_file


@functools.lru_cache(maxsize=None)
def _vocabulary(path: Optional[str], extra_ids: int) -> T5Vocabulary:
  return T5Vocabulary(path, extra_ids)


def get_vocabulary(path: Optional[str] = None,
                   extra_ids: int = DEFAULT_EXTRA_IDS) -> T5Vocabulary:
  """The vocabulary of the SentencePiece model at `path` plus `extra_ids` sentinels.

  `path=None` gives the default vocabulary (see `default_vocab_path`), resolved
  lazily. The same arguments return the same object.
  """
  if path is not None:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"SentencePiece model {path} does not exist; pass "
                              "the path of a .model file.")
    path = os.path.abspath(path)
  return _vocabulary(path, extra_ids)


def _sentences(input_path: str, text_column: str) -> Iterator[str]:
  if input_path.endswith(".tsv"):
    yield from tsv.iter_column(input_path, text_column)
  else:
    with open(input_path, encoding="utf-8") as f:
      for line in f:
        yield line.rstrip("\n")


def train_sentencepiece(input_path: str,
                        output_prefix: str,
                        vocab_size: int,
                        *,
                        text_column: str = "text",
                        character_coverage: float = 1.0,
                        max_sentences: int = 5_000_000,
                        max_sentence_length: int = 16384,
                        seed: int = 0,
                        num_threads: int = 1) -> str:
  """Trains a unigram SentencePiece model with T5's conventions; returns the .model path.

  `input_path` is a header-first TSV (its `text_column` is read) or a plain text
  file (one text per line). Pieces: pad 0, eos 1, unk 2, no bos, so the model
  works with `get_vocabulary` and sentinels. Writes `output_prefix`.model and
  `output_prefix`.vocab; at most `max_sentences` lines are sampled.
  """
  if not os.path.isfile(input_path):
    raise FileNotFoundError(f"Training text {input_path} does not exist.")
  directory = os.path.dirname(os.path.abspath(output_prefix))
  os.makedirs(directory, exist_ok=True)
  spm.set_random_generator_seed(seed)
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=_sentences(input_path, text_column),
        model_prefix=output_prefix,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=character_coverage,
        pad_id=T5_SPECIAL_IDS["pad"],
        eos_id=T5_SPECIAL_IDS["eos"],
        unk_id=T5_SPECIAL_IDS["unk"],
        bos_id=-1,
        input_sentence_size=max_sentences,
        shuffle_input_sentence=True,
        max_sentence_length=max_sentence_length,
        num_threads=num_threads,
        minloglevel=2)
  except RuntimeError as e:
    raise ValueError(f"SentencePiece training on {input_path} failed: {e}") from None
  return output_prefix + ".model"
