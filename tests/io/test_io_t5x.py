"""T5X checkpoints: the reference written by T5X itself, flax-written trees, zarr arrays."""
import gzip
import json
import shutil

import flax.serialization
import ml_dtypes
import numpy as np
import pytest

from repo_paths import SHARED_REFERENCE
from io_testing import assert_trees_equal
from prompt_tuning.io import CheckpointError, load_pretrained, read_t5x_checkpoint, t5x
from prompt_tuning.io.params import expected_shapes, flatten, unflatten
from prompt_tuning.models.config import T5Config

REFERENCE = SHARED_REFERENCE / "t5x_t5_1_1_tiny"
needs_reference = pytest.mark.skipif(
    not (REFERENCE / "checkpoint_3" / "checkpoint").is_file(),
    reason=f"T5X reference checkpoint not found at {REFERENCE} (shared/reference beside the repo)")


@pytest.fixture(scope="module")
def reference():
  return read_t5x_checkpoint(REFERENCE / "checkpoint_3")


@needs_reference
def test_reference_checkpoint_config(reference):
  config, _ = reference
  assert (config.vocab_size, config.emb_dim, config.num_heads, config.head_dim,
          config.mlp_dim) == (32128, 4, 2, 2, 8)
  assert (config.num_encoder_layers, config.num_decoder_layers) == (2, 2)
  assert config.mlp_activations == ("gelu", "linear")
  assert not config.logits_via_embedding
  assert config.relative_attention_num_buckets == 4


@needs_reference
def test_reference_checkpoint_values_are_sane(reference):
  _, params = reference
  flat = flatten(params)
  assert len(flat) == 52
  assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in flat.values())
  emb = flat["token_embedder/embedding"]
  assert emb.shape == (32128, 4)
  # Rows of every zarr chunk (4096 rows each), the cut-off last one included, were filled:
  # a normal(0, 1) init has mean |x| = sqrt(2 / pi).
  for start in range(0, 32128, 4096):
    rows = emb[start:start + 4096]
    assert abs(np.abs(rows).mean() - 0.798) < 0.05, start
    assert np.abs(rows).min(axis=1).max() > 0
  assert flat["decoder/logits_dense/kernel"].shape == (4, 32128)
  assert np.abs(flat["decoder/logits_dense/kernel"][:, -100:]).sum() > 0
  # Layer-norm scales start at 1 and moved only a little in 3 steps; inline msgpack arrays.
  for path, value in flat.items():
    if path.endswith("/scale"):
      assert value.shape == (4,) and np.all(np.abs(value - 1) < 0.2), path
  assert flat["encoder/relpos_bias/rel_embedding"].shape == (2, 4)
  assert not np.array_equal(flat["encoder/relpos_bias/rel_embedding"],
                            flat["decoder/relpos_bias/rel_embedding"])


@needs_reference
def test_reference_reads_from_step_folder_parent_or_file(reference):
  _, params = reference
  for path in (REFERENCE, REFERENCE / "checkpoint_3" / "checkpoint"):
    config, other = load_pretrained(path)
    assert config == reference[0]
    np.testing.assert_array_equal(flatten(other)["encoder/layers_1/mlp/wo/kernel"],
                                  flatten(params)["encoder/layers_1/mlp/wo/kernel"])


@needs_reference
def test_missing_zarr_folder_is_named(tmp_path):
  copy = tmp_path / "checkpoint_3"
  shutil.copytree(REFERENCE / "checkpoint_3", copy)
  shutil.rmtree(copy / "target.encoder.layers_1.mlp.wi_0.kernel")
  with pytest.raises(CheckpointError, match="encoder/layers_1/mlp/wi_0/kernel.*zarr"):
    read_t5x_checkpoint(copy)


def test_latest_step_is_chosen(tmp_path):
  for step in (2, 10, 9):
    (tmp_path / f"checkpoint_{step}").mkdir()
    (tmp_path / f"checkpoint_{step}" / "checkpoint").write_bytes(b"")
  (tmp_path / "checkpoint_11").mkdir()  # no checkpoint file: an unfinished save.
  assert t5x.find_checkpoint_dir(tmp_path) == tmp_path / "checkpoint_10"


def _random_tree(config, seed=0):
  rng = np.random.default_rng(seed)
  return unflatten({path: rng.normal(size=shape).astype(np.float32)
                    for path, shape in expected_shapes(config).items()})


T5_1_0 = T5Config(vocab_size=40, emb_dim=16, num_heads=2, head_dim=6, mlp_dim=24,
                  num_encoder_layers=2, num_decoder_layers=3, mlp_activations=("relu",),
                  logits_via_embedding=True, relative_attention_num_buckets=8)


@pytest.mark.parametrize("config", [T5_1_0, T5_1_0.replace(
    mlp_activations=("gelu", "linear"), logits_via_embedding=False)], ids=["t5_1_0", "t5_1_1"])
def test_flax_written_checkpoint(config, tmp_path, monkeypatch):
  """Arrays inline as flax's msgpack extension, the big ones cut into flax's chunks."""
  monkeypatch.setattr(flax.serialization, "MAX_CHUNK_SIZE", 1000)  # bytes
  params = _random_tree(config)
  state = {"version": 3, "optimizer": {"target": params, "state": {"step": np.int32(7)}}}
  (tmp_path / "checkpoint_7").mkdir()
  data = flax.serialization.to_bytes(state)
  assert b"__msgpack_chunked_array__" in data
  (tmp_path / "checkpoint_7" / "checkpoint").write_bytes(data)
  read_config, read = read_t5x_checkpoint(tmp_path)
  assert read_config == config
  assert_trees_equal(read, params)


def _write_zarr(folder, array, chunks, order="C", separator=".", skip=(), dtype_name=None):
  """A zarr v2 folder written by hand: padded edge chunks, gzip, chunks in `skip` left out."""
  folder.mkdir()
  header = {"zarr_format": 2, "shape": list(array.shape), "chunks": list(chunks),
            "dtype": dtype_name or array.dtype.str, "compressor": {"id": "gzip", "level": 1},
            "fill_value": None, "order": order, "filters": None,
            "dimension_separator": separator}
  (folder / ".zarray").write_text(json.dumps(header))
  grid = [range(-(-s // c)) for s, c in zip(array.shape, chunks)]
  for index in np.ndindex(*[len(g) for g in grid]):
    if index in skip:
      continue
    block = np.zeros(chunks, array.dtype)
    part = array[tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks))]
    block[tuple(slice(0, n) for n in part.shape)] = part
    name = separator.join(map(str, index))
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(gzip.compress(block.tobytes(order=order)))


@pytest.mark.parametrize("order,separator", [("C", "."), ("F", "/")])
def test_zarr_chunks_are_reassembled(tmp_path, order, separator):
  array = np.arange(7 * 5, dtype=np.float32).reshape(7, 5) + 1
  _write_zarr(tmp_path / "a", array, (3, 2), order, separator, skip={(1, 1)})
  expected = array.copy()
  expected[3:6, 2:4] = 0  # the chunk left out reads as the fill value
  np.testing.assert_array_equal(t5x.read_zarr(tmp_path / "a"), expected)


def test_zarr_bfloat16(tmp_path):
  array = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4).astype(ml_dtypes.bfloat16)
  _write_zarr(tmp_path / "a", array, (2, 4), dtype_name="bfloat16")
  out = t5x.read_zarr(tmp_path / "a")
  assert out.dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(out.astype(np.float32), array.astype(np.float32))


def test_corrupt_zarr_chunk_is_named(tmp_path):
  _write_zarr(tmp_path / "a", np.ones((2, 2), np.float32), (2, 2))
  (tmp_path / "a" / "0.0").write_bytes(b"not gzip")
  with pytest.raises(CheckpointError, match=r"0\.0 is corrupt"):
    t5x.read_zarr(tmp_path / "a")


def test_not_a_msgpack_checkpoint(tmp_path):
  (tmp_path / "checkpoint").write_bytes(b"\xc1 not msgpack")
  with pytest.raises(CheckpointError, match="msgpack"):
    read_t5x_checkpoint(tmp_path)


def test_tensorflow_checkpoint_is_recognised(tmp_path):
  (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-1000000"\n')
  with pytest.raises(CheckpointError, match="TensorFlow.*not a T5X"):
    load_pretrained(tmp_path)


def test_tree_without_target_lists_its_keys(tmp_path):
  (tmp_path / "checkpoint").write_bytes(flax.serialization.to_bytes({"params": {"a": 1}}))
  with pytest.raises(CheckpointError, match=r"optimizer/target.*\['params'\]"):
    read_t5x_checkpoint(tmp_path)


def test_not_a_t5_tree(tmp_path):
  state = {"optimizer": {"target": {"Dense_0": {"kernel": np.ones((2, 3), np.float32)}}}}
  (tmp_path / "checkpoint").write_bytes(flax.serialization.to_bytes(state))
  with pytest.raises(CheckpointError, match="not a T5.*token_embedder/embedding.*Dense_0"):
    read_t5x_checkpoint(tmp_path)
