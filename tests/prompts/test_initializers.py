"""Prompt initialisers: distributions, vocabulary rows, label averages, files, bad shapes."""
import jax
import numpy as np
import pytest

from prompt_tuning.io.prompts import save_prompt_npy
from prompt_tuning.prompts import initializers as init_lib

TABLE = np.random.RandomState(0).randn(50, 6).astype(np.float32)
KEY = jax.random.PRNGKey(0)


class WordVocab:
  """A stand-in vocabulary: one id per word from a fixed dictionary."""
  IDS = {"great": [7], "terrible": [8, 9], "so": [10], "so-so": [10, 11, 10]}

  def encode(self, text):
    return [i for word in text.split() for i in self.IDS[word]]


def test_uniform_is_within_scale_and_spread():
  x = np.asarray(init_lib.from_uniform(0.5)(KEY, (200, 6)))
  assert x.shape == (200, 6) and x.dtype == np.float32
  assert x.min() >= -0.5 and x.max() <= 0.5
  assert abs(x.std() - 0.5 / np.sqrt(3)) < 0.02  # the std of U(-a, a) is a/sqrt(3)


def test_sampled_vocab_draws_distinct_rows_from_the_population():
  x = np.asarray(init_lib.from_sampled_vocab(population_size=20)(KEY, (20, 6), TABLE))
  rows = [int(np.where((TABLE == r).all(1))[0][0]) for r in x]
  assert sorted(rows) == list(range(20))  # without replacement: each of the 20 once


def test_sampled_vocab_replaces_only_when_it_must():
  x = np.asarray(init_lib.from_sampled_vocab(population_size=3)(KEY, (7, 6), TABLE))
  rows = {int(np.where((TABLE == r).all(1))[0][0]) for r in x}
  assert rows <= {0, 1, 2}


def test_class_labels_average_subwords_then_fall_back():
  init = init_lib.from_class_labels(["great", "terrible", "so-so"], vocabulary=WordVocab(),
                                    fallback=init_lib.from_uniform(0.01))
  x = np.asarray(init(KEY, (5, 6), TABLE))
  np.testing.assert_allclose(x[0], TABLE[7], rtol=1e-6)
  np.testing.assert_allclose(x[1], TABLE[[8, 9]].mean(0), rtol=1e-6)
  np.testing.assert_allclose(x[2], TABLE[[10, 11, 10]].mean(0), rtol=1e-6)
  assert np.abs(x[3:]).max() <= 0.01


def test_class_labels_with_the_public_t5_vocabulary(shared_reference):
  from prompt_tuning.data.vocab import get_vocabulary
  vocab = get_vocabulary(str(shared_reference / "t5_sentencepiece.model"))
  table = np.random.RandomState(1).randn(32128, 4).astype(np.float32)
  x = np.asarray(init_lib.from_class_labels(["positive", "negative"], vocab)(KEY, (3, 4), table))
  ids = list(vocab.encode("negative"))
  np.testing.assert_allclose(x[1], table[ids].mean(0), rtol=1e-6)


def test_string_embeds_one_row_per_token():
  x = np.asarray(init_lib.from_string("so great", vocabulary=WordVocab())(KEY, (4, 6), TABLE))
  np.testing.assert_array_equal(x[:2], TABLE[[10, 7]])
  with pytest.raises(ValueError, match="longer than the prompt"):
    init_lib.from_string("so-so great", vocabulary=WordVocab())(KEY, (2, 6), TABLE)


def test_array_and_file_round_trip(tmp_path):
  prompt = np.random.RandomState(2).randn(3, 6).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(init_lib.from_array(prompt)(KEY, (3, 6))), prompt)
  path = save_prompt_npy(tmp_path / "p.npy", prompt)
  np.testing.assert_array_equal(np.asarray(init_lib.from_file(str(path))(KEY, (3, 6))), prompt)


def test_wrong_shapes_name_both_shapes(tmp_path):
  prompt = np.zeros((3, 6), np.float32)
  with pytest.raises(ValueError, match=r"shape \(3, 6\) but the model expects \(4, 6\)"):
    init_lib.from_array(prompt)(KEY, (4, 6))
  path = save_prompt_npy(tmp_path / "p.npy", prompt)
  with pytest.raises(ValueError, match=r"\(3, 6\).*\(3, 8\)"):
    init_lib.from_file(str(path))(KEY, (3, 8))
  with pytest.raises(ValueError, match=r"prompt is 5 wide but the token embedding has shape"):
    init_lib.from_sampled_vocab()(KEY, (2, 5), TABLE)
  with pytest.raises(ValueError, match="both positive"):
    init_lib.from_uniform()(KEY, (0, 6))
  with pytest.raises(ValueError, match="do not fit in a prompt of length 1"):
    init_lib.from_class_labels(["great", "so"], vocabulary=WordVocab())(KEY, (1, 6), TABLE)
