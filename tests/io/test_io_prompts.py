"""`.npy` prompt files: atomic save, shape-checked load."""
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning.io import CheckpointError, load_prompt_npy, save_prompt_npy


def test_round_trip_keeps_values_and_dtype(tmp_path):
  prompt = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
  save_prompt_npy(tmp_path / "p.npy", prompt)
  out = load_prompt_npy(tmp_path / "p.npy", expected_shape=(5, 16))
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, prompt)
  np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), prompt)  # a plain .npy file


def test_jax_arrays_are_saved(tmp_path):
  save_prompt_npy(tmp_path / "p.npy", jnp.arange(6.0).reshape(2, 3))
  np.testing.assert_array_equal(load_prompt_npy(tmp_path / "p.npy"),
                                np.arange(6.0, dtype=np.float32).reshape(2, 3))


def test_wrong_shape_names_both(tmp_path):
  save_prompt_npy(tmp_path / "p.npy", np.zeros((50, 768), np.float32))
  with pytest.raises(CheckpointError, match=r"shape \(50, 768\) but the model expects "
                                            r"\(None, 512\)"):
    load_prompt_npy(tmp_path / "p.npy", expected_shape=(None, 512))
  assert load_prompt_npy(tmp_path / "p.npy", expected_shape=(None, 768)).shape == (50, 768)


def test_bad_files(tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    load_prompt_npy(tmp_path / "missing.npy")
  np.save(tmp_path / "ints.npy", np.arange(4))
  with pytest.raises(CheckpointError, match="float array"):
    load_prompt_npy(tmp_path / "ints.npy")
  np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
  with pytest.raises(CheckpointError, match="cannot read"):
    load_prompt_npy(tmp_path / "objects.npy")
  with pytest.raises(CheckpointError, match="float array"):
    save_prompt_npy(tmp_path / "x.npy", np.arange(3))


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
  save_prompt_npy(tmp_path / "p.npy", np.ones((2, 2), np.float32))

  def crash(f, *args, **kwargs):
    f.write(b"half")
    raise KeyboardInterrupt

  monkeypatch.setattr(np, "save", crash)
  with pytest.raises(KeyboardInterrupt):
    save_prompt_npy(tmp_path / "p.npy", np.zeros((2, 2), np.float32))
  monkeypatch.undo()
  np.testing.assert_array_equal(load_prompt_npy(tmp_path / "p.npy"), np.ones((2, 2)))
  assert [p.name for p in tmp_path.iterdir()] == ["p.npy"]
