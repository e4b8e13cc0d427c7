"""The vocabulary against Hugging Face's T5Tokenizer, and our SentencePiece trainer."""
import importlib.util
import pathlib
import random
import shutil

import pytest
import sentencepiece as spm
import tensorflow as tf

from data_testing import SHARED_REFERENCE, T5_SPM, sentence, write_tsv
from prompt_tuning.data import vocab
needs_reference = pytest.mark.skipif(
    not T5_SPM.exists(), reason=f"reference folder {SHARED_REFERENCE} is absent")

# seqio and transformers agree on these; a sentinel glued to a word or followed
# by punctuation is tokenized differently (seqio documents this limitation).
SENTENCES = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "  multiple   spaces\tand a tab  ",
    "Ünïcödé façade naïve — “quotes” and 1,234.56 dollars",
    "日本語のテキストと emoji 🙂",
    "Prompt tuning learns 100 soft tokens; the model stays frozen.",
    "Fill <extra_id_0> the <extra_id_1> blanks <extra_id_99> please",
    "",
]


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
  transformers = pytest.importorskip("transformers")
  directory = tmp_path_factory.mktemp("hf")
  shutil.copy(T5_SPM, directory / "spiece.model")
  return transformers.T5Tokenizer.from_pretrained(str(directory))


@needs_reference
def test_ids_match_transformers_t5_tokenizer(hf_tokenizer):
  v = vocab.get_vocabulary(str(T5_SPM))
  assert (v.vocab_size, v.pad_id, v.eos_id, v.unk_id) == (32100, 0, 1, 2)
  assert v.vocab_size == len(hf_tokenizer)
  for text in SENTENCES:
    expected = hf_tokenizer(text, add_special_tokens=False).input_ids
    assert list(v.encode(text)) == expected, text
    assert v.encode_tf(tf.constant(text)).numpy().tolist() == expected, text
  assert v.encode("<extra_id_0>") == [32099]
  assert v.encode("<extra_id_99>") == [32000]
  assert hf_tokenizer.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [32099, 32000]


@needs_reference
def test_same_arguments_give_the_same_object():
  assert vocab.get_vocabulary(str(T5_SPM)) is vocab.get_vocabulary(str(T5_SPM))
  assert vocab.get_vocabulary(str(T5_SPM), extra_ids=0).vocab_size == 32000


def test_default_vocabulary_follows_the_environment(tiny_spm, monkeypatch, tmp_path):
  monkeypatch.setattr(vocab, "PACKAGED_VOCAB", tmp_path / "absent.model")
  monkeypatch.delenv(vocab.VOCAB_ENV, raising=False)
  default = vocab.get_vocabulary()
  with pytest.raises(FileNotFoundError, match=vocab.VOCAB_ENV):
    default.encode("hello")
  monkeypatch.setenv(vocab.VOCAB_ENV, tiny_spm)
  assert default.vocab_size == 48 + 100
  assert default.sentencepiece_model_file == tiny_spm
  monkeypatch.setenv(vocab.VOCAB_ENV, str(tmp_path / "missing.model"))
  with pytest.raises(FileNotFoundError, match="missing.model"):
    default.encode("hello")


def test_missing_model_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing.model"):
    vocab.get_vocabulary(str(tmp_path / "nothing.model"))


def test_model_without_t5_ids_is_rejected(tmp_path):
  text = tmp_path / "text.txt"
  text.write_text("a small text to train on\nwith two lines of words\n" * 20)
  # SentencePiece's own defaults: unk 0, bos 1, eos 2, no pad.
  spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "m"),
                                 vocab_size=20, minloglevel=2)
  v = vocab.get_vocabulary(str(tmp_path / "m.model"))
  with pytest.raises(ValueError, match="T5 needs"):
    v.encode("hello")


def _check_t5_conventions(model_path, texts):
  processor = spm.SentencePieceProcessor(model_file=model_path)
  assert (processor.pad_id(), processor.eos_id(), processor.unk_id()) == (0, 1, 2)
  assert processor.bos_id() == -1
  assert [processor.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
  assert "<s>" not in {processor.id_to_piece(i) for i in range(processor.get_piece_size())}
  v = vocab.get_vocabulary(model_path)
  for text in texts:
    ids = v.encode(text)
    assert ids and max(ids) < processor.get_piece_size()
    assert v.decode(ids) == text


def test_train_sentencepiece_from_text(tiny_spm):
  lines = pathlib.Path(tiny_spm).with_name("text.txt").read_text().splitlines()
  assert spm.SentencePieceProcessor(model_file=tiny_spm).get_piece_size() == 48
  _check_t5_conventions(tiny_spm, lines[:20])


def test_train_sentencepiece_from_tsv_column(tmp_path):
  rng = random.Random(2)
  texts = ["review " + sentence(rng, 10) for _ in range(300)]
  path = write_tsv(tmp_path / "data.tsv", ["label", "review"],
                   [[str(i % 2), t] for i, t in enumerate(texts)])
  model = vocab.train_sentencepiece(path, str(tmp_path / "out" / "m"), 48,
                                    text_column="review")
  _check_t5_conventions(model, texts[:10])
  pieces = spm.SentencePieceProcessor(model_file=model)
  vocabulary = {pieces.id_to_piece(i) for i in range(48)}
  assert "▁the" in vocabulary
  assert not vocabulary & {"0", "1", "▁0", "▁1"}, "read the label column"
  with pytest.raises(ValueError, match="no column 'text'"):
    vocab.train_sentencepiece(path, str(tmp_path / "m2"), 48)


def test_train_spm_script(tmp_path, tiny_spm):
  script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "train_spm.py"
  spec = importlib.util.spec_from_file_location("train_spm", script)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  text = pathlib.Path(tiny_spm).with_name("text.txt")
  path = module.main(["--input", str(text), "--output_prefix",
                      str(tmp_path / "cli"), "--vocab_size", "40"])
  assert path == str(tmp_path / "cli.model")
  assert spm.SentencePieceProcessor(model_file=path).get_piece_size() == 40
  assert (tmp_path / "cli.vocab").exists()
