"""Checkpoints: bit-exact round trips, nothing frozen on disk, retention, a full disk, errors."""
import errno
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from prompt_tuning import io
from prompt_tuning.models import get_config
from prompt_tuning.models.network import T5
from prompt_tuning.prompts import from_sampled_vocab, init_prompt_params, prompted_t5
from prompt_tuning.train import checkpoints, optimizers, partitioning
from prompt_tuning.train import step as step_lib
from prompt_tuning.train.state import EVERYTHING, PROMPT_ONLY, tree_bytes

CONFIG = get_config("tiny", dropout_rate=0.0)
PROMPT_LENGTH = 4


def _program(model, trainable=PROMPT_ONLY):
  mesh = partitioning.make_mesh((1, 1), jax.devices()[:1])
  return step_lib.build(model, optimizers.adafactor(), mesh, step_lib.abstract_params(model),
                        trainable)


@pytest.fixture(scope="module")
def run():
  frozen = nn.meta.unbox(T5(CONFIG).init_params(jax.random.PRNGKey(0)))
  model = prompted_t5(CONFIG, PROMPT_LENGTH, from_sampled_vocab(50))
  prompt = nn.meta.unbox(init_prompt_params(model, frozen, jax.random.PRNGKey(1)))
  program = _program(model)
  _, placed_frozen = program.init_state(prompt, frozen)
  fresh = lambda: program.init_state(prompt, frozen)[0]
  return program, fresh, placed_frozen, frozen


def _step(run, state, seed):
  program, _, frozen, _ = run
  rng = np.random.RandomState(seed)
  batch = {k: rng.randint(2, 128, (8, n)).astype(np.int32) for k, n in (
      ("encoder_input_tokens", 12), ("decoder_input_tokens", 5), ("decoder_target_tokens", 5))}
  return program.train_step(state, frozen, program.place_batch(batch))[0]


def _assert_same(restored, expected):
  """Same tree structure and every leaf equal bit for bit (dtype included)."""
  assert jax.tree.structure(restored) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def _tree_size(folder: pathlib.Path) -> int:
  return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_round_trip_is_bit_exact_and_holds_no_frozen_weights(run, tmp_path):
  program, fresh, _, frozen = run
  state = _step(run, _step(run, fresh(), 0), 1)
  expected = jax.device_get(state)
  ckpt = checkpoints.Checkpointer(tmp_path, keep=3)
  assert ckpt.save(2, state, data_position=7)
  # The next step donates `state` while the save may still be writing in the background.
  later = _step(run, state, 2)
  expected_later = jax.device_get(later)
  assert ckpt.save(3, later, data_position=8)
  ckpt.wait_until_finished()
  assert not ckpt.save(3, later, data_position=8)  # already saved: nothing written

  abstract = checkpoints.abstract_state(program)
  restored, position = ckpt.restore(abstract, step=2)
  assert position == 7 and int(restored.step) == 2
  _assert_same(restored, expected)
  assert not np.array_equal(expected.params["encoder_prompt"]["prompt"],
                            expected_later.params["encoder_prompt"]["prompt"])
  for leaf, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(program.state_shardings)):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
  restored, position = ckpt.restore(abstract)  # the latest
  assert position == 8 and int(restored.step) == 3
  _assert_same(restored, expected_later)
  # The restored state feeds the compiled step as it is.
  _step(run, restored, 3)

  # The prompt of each checkpoint, as .npy.
  for step, want in ((2, expected), (3, expected_later)):
    npy = io.load_prompt_npy(tmp_path / "prompts" / f"step_{step}.npy")
    assert npy.tobytes() == np.asarray(want.params["encoder_prompt"]["prompt"]).tobytes()

  # Only the prompt and its optimiser state are on disk, never the frozen model.
  step_dir = tmp_path / "checkpoints" / "2"
  assert tree_bytes(frozen) > 200_000
  assert _tree_size(step_dir) < 50_000
  assert not any(b"token_embedder" in p.read_bytes() or "token_embedder" in p.name
                 for p in step_dir.rglob("*") if p.is_file())
  _, params = checkpoints.read_params(tmp_path, 2)
  assert list(params) == ["encoder_prompt"]
  ckpt.close()


def _pipeline(skip=0):
  """A shuffled, batched, prefetched stream, as the trainer's input pipeline is."""
  import tensorflow as tf
  from prompt_tuning.data.pipeline import skip_batches
  return skip_batches(tf.data.Dataset.range(1000).shuffle(50, seed=0).batch(4), skip).prefetch(2)


def test_data_iterator_resumes_where_it_was_saved(run, tmp_path):
  import tensorflow as tf
  state = run[1]()
  iterator = iter(_pipeline(skip=3))  # a run that itself resumed by skipping
  for _ in range(5):
    next(iterator)
  ckpt = checkpoints.Checkpointer(tmp_path, keep=3)  # asynchronous, as in training
  assert ckpt.save(8, state, data_position=8, data_iterator=iterator)
  # Reading on at once must not change what was saved.
  expected = [next(iterator).numpy() for _ in range(3)]
  assert ckpt.save(11, state, data_position=11)  # this one without the iterator
  ckpt.wait_until_finished()
  assert (tmp_path / "checkpoints" / "8" / "data_iterator").is_dir()
  assert not (tmp_path / "checkpoints" / "11" / "data_iterator").exists()
  assert ckpt.has_data_iterator(8) and not ckpt.has_data_iterator(11)

  fresh = iter(_pipeline())  # built at batch 0: the same structure
  assert ckpt.restore_data_iterator(fresh, 8)
  for want in expected:
    np.testing.assert_array_equal(next(fresh).numpy(), want)
  untouched = iter(_pipeline())
  assert not ckpt.restore_data_iterator(untouched, 11)
  np.testing.assert_array_equal(next(untouched).numpy(), next(iter(_pipeline())).numpy())
  with pytest.raises(io.CheckpointError, match="does not fit this run's input pipeline"):
    ckpt.restore_data_iterator(iter(tf.data.Dataset.range(10).batch(2)), 8)
  with pytest.raises(io.CheckpointError, match="step 9 does not exist"):
    ckpt.restore_data_iterator(iter(_pipeline()), 9)
  ckpt.close()


def test_retention_keeps_the_newest(run, tmp_path):
  state = run[1]()
  ckpt = checkpoints.Checkpointer(tmp_path, keep=2, async_save=False)
  assert ckpt.latest_step() is None and ckpt.all_steps() == []
  for step in (10, 20, 30, 40):
    ckpt.save(step, state, data_position=step)
  assert ckpt.all_steps() == [30, 40] and ckpt.latest_step() == 40
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["30", "40"]
  ckpt.close()
  reopened = checkpoints.Checkpointer(tmp_path, keep=2)
  assert reopened.latest_step() == 40
  assert reopened.restore(checkpoints.abstract_state(run[0]))[1] == 40
  reopened.close()


def test_restore_into_another_prompt_length_names_the_parameter(run, tmp_path):
  ckpt = checkpoints.Checkpointer(tmp_path, async_save=False)
  ckpt.save(1, run[1](), 0)
  other = _program(prompted_t5(CONFIG, PROMPT_LENGTH + 2, from_sampled_vocab(50)))
  with pytest.raises(io.CheckpointError) as error:
    ckpt.restore(checkpoints.abstract_state(other))
  message = str(error.value)
  assert "encoder_prompt/prompt" in message
  assert f"({PROMPT_LENGTH}, {CONFIG.emb_dim})" in message
  assert f"({PROMPT_LENGTH + 2}, {CONFIG.emb_dim})" in message
  assert "fresh MODEL_DIR" in message
  # A full-model state restored from a prompt checkpoint: the missing tensors are named.
  full = _program(T5(CONFIG), EVERYTHING)
  with pytest.raises(io.CheckpointError,
                     match="the checkpoint lacks, under decoder, encoder, token_embedder"):
    ckpt.restore(checkpoints.abstract_state(full))
  ckpt.close()


def test_missing_steps_are_listed(run, tmp_path):
  ckpt = checkpoints.Checkpointer(tmp_path, async_save=False)
  abstract = checkpoints.abstract_state(run[0])
  with pytest.raises(io.CheckpointError, match="no checkpoint found"):
    ckpt.restore(abstract)
  for step in (1, 2):
    ckpt.save(step, run[1](), step)
  with pytest.raises(io.CheckpointError,
                     match=r"step 5 does not exist .*available steps: \[1, 2\]"):
    ckpt.restore(abstract, step=5)
  with pytest.raises(TypeError, match="TrainState"):
    ckpt.restore(abstract.params)
  ckpt.close()


@pytest.mark.parametrize("async_save", [True, False])
def test_a_full_disk_leaves_the_last_checkpoint_readable(run, tmp_path, monkeypatch, async_save):
  state = _step(run, run[1](), 0)
  expected = jax.device_get(state)
  # keep=1: saving step 2 would drop step 1 once step 2 is complete.
  ckpt = checkpoints.Checkpointer(tmp_path, keep=1, async_save=async_save)
  ckpt.save(1, state, 5)
  ckpt.wait_until_finished()

  async def disk_full(self, item, directory):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full)
  with pytest.raises(checkpoints.CheckpointSaveError,
                     match=r"could not save checkpoint 2: .*No space left.*disk is full.*"
                           r"latest good checkpoint is step 1"):
    ckpt.save(2, state, 6)
    ckpt.wait_until_finished()
  monkeypatch.undo()
  assert ckpt.all_steps() == [1] and ckpt.latest_step() == 1
  assert not (tmp_path / "checkpoints" / "2").exists()
  restored, position = ckpt.restore(checkpoints.abstract_state(run[0]))
  assert position == 5
  _assert_same(restored, expected)
  # Once there is space again, the same step saves.
  assert ckpt.save(2, state, 6)
  ckpt.close()
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]


def test_full_model_checkpoint_loads_through_load_pretrained(run, tmp_path):
  host = run[3]
  program = _program(T5(CONFIG), EVERYTHING)
  state, frozen = program.init_state(host, {})
  assert frozen == {}
  ckpt = checkpoints.Checkpointer(tmp_path, async_save=False)
  checkpoints.save_model_config(tmp_path, CONFIG, {"mode": "full"})
  ckpt.save(3, state, 0)
  ckpt.close()
  assert not (tmp_path / "prompts").exists()
  assert checkpoints.load_model_config(tmp_path) == (CONFIG, {"mode": "full"})
  for path in (tmp_path, tmp_path / "checkpoints", tmp_path / "checkpoints" / "3"):
    config, params = io.load_pretrained(path)
    assert config == CONFIG
    _assert_same(params, host)


def test_prompt_checkpoint_is_not_a_pretrained_model(run, tmp_path):
  ckpt = checkpoints.Checkpointer(tmp_path, async_save=False)
  checkpoints.save_model_config(tmp_path, CONFIG, {"mode": "prompt"})
  ckpt.save(1, run[1](), 0)
  ckpt.close()
  with pytest.raises(io.CheckpointError,
                     match="tuning method .*; it holds no model weights .*"
                           "INITIAL_CHECKPOINT_PATH"):
    io.load_pretrained(tmp_path)


def test_model_dir_without_config_or_checkpoints(tmp_path):
  checkpoints.save_model_config(tmp_path, CONFIG, {})
  with pytest.raises(io.CheckpointError, match="no checkpoint found"):
    io.load_pretrained(tmp_path)
  (tmp_path / "config.json").unlink()
  (tmp_path / "checkpoints" / "4" / "params").mkdir(parents=True)
  with pytest.raises(io.CheckpointError, match="config.json is missing"):
    checkpoints.read_orbax_checkpoint(tmp_path)
  with pytest.raises(ValueError, match="reserved"):
    checkpoints.save_model_config(tmp_path, CONFIG, {"t5_config": 1})
