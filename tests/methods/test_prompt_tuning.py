"""Prompt tuning as a `Method`: the same bytes as before the seam existed."""
import pathlib

import numpy as np

import golden_prompt_tuning as golden

GOLDEN = pathlib.Path(__file__).parent / "data" / "prompt_tuning_golden.npy"


def test_exported_prompt_is_bit_for_bit_the_one_written_before_the_method_seam(tmp_path):
  exported = golden.train_and_export(tmp_path, tmp_path / "prompt.npy")
  expected = np.load(GOLDEN)
  assert exported.shape == expected.shape == (golden.PROMPT_LENGTH, 32)
  assert exported.dtype == expected.dtype
  assert exported.tobytes() == expected.tobytes(), np.abs(exported - expected).max()
