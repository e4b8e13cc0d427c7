"""get_dataset: model features, determinism, resuming by batch, sharding, errors."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from prompt_tuning.data import get_dataset

FEATURES = {"encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
            "decoder_loss_weights"}
LENGTHS = {"inputs": 24, "targets": 8}


def _span_corruption():
  """The registered task with a small shuffle buffer: filling seqio's default
  one would first run the tiny test corpus through many epochs."""
  task = seqio.TaskRegistry.get("pretrain_span_corruption")
  return task.replace(shuffle_buffer_size=64)


def _batches(*args, count=None, **kwargs):
  ds = get_dataset(*args, **kwargs)
  return list((ds.take(count) if count else ds).as_numpy_iterator())


def test_batches_hold_encoder_decoder_features(corpus_cache, default_vocab):
  batches = _batches("rotten_tomatoes", "train", LENGTHS, 4, seed=1, num_epochs=1)
  assert len(batches) == 24 // 4
  for batch in batches:
    assert set(batch) == FEATURES
    assert batch["encoder_input_tokens"].shape == (4, 24)
    assert all(batch[k].shape == (4, 8) and batch[k].dtype == np.int32
               for k in FEATURES - {"encoder_input_tokens"})
    targets = batch["decoder_target_tokens"]
    assert np.array_equal(batch["decoder_input_tokens"][:, 1:], targets[:, :-1])
    assert not batch["decoder_input_tokens"][:, 0].any()
    assert np.array_equal(batch["decoder_loss_weights"], (targets != 0).astype(np.int32))


def test_same_seed_same_stream_and_start_batch_resumes_it(corpus_cache, default_vocab):
  task = _span_corruption()
  kwargs = dict(split="train", task_feature_lengths=LENGTHS, batch_size=8)
  one_epoch = len(_batches(task, num_epochs=1, **kwargs))
  count = one_epoch + 3  # run into the second epoch
  full = _batches(task, seed=3, count=count, **kwargs)
  again = _batches(task, seed=3, count=3, **kwargs)
  resumed = _batches(task, seed=3, start_batch=one_epoch - 2, count=5, **kwargs)
  other = _batches(task, seed=4, count=2, **kwargs)
  for a, b in zip(full, again):
    assert all(np.array_equal(a[k], b[k]) for k in FEATURES)
  for a, b in zip(full[one_epoch - 2:], resumed):
    assert all(np.array_equal(a[k], b[k]) for k in FEATURES)
  assert len(resumed) == 5
  assert not np.array_equal(full[0]["encoder_input_tokens"], other[0]["encoder_input_tokens"])


def test_iterator_state_can_be_checkpointed(corpus_cache, default_vocab, tmp_path):
  """Saved by a run that itself started at batch 2, restored into one built at batch 0."""
  def iterator(start_batch=0):
    return iter(get_dataset(_span_corruption(), "train", LENGTHS, 8, seed=2,
                            start_batch=start_batch))

  first = iterator(start_batch=2)
  next(first)
  path = tf.train.Checkpoint(it=first).save(str(tmp_path / "data"))
  expected = [next(first)["encoder_input_tokens"].numpy() for _ in range(2)]
  uninterrupted = [b["encoder_input_tokens"].numpy() for b, _ in zip(iterator(), range(5))]
  second = iterator()
  tf.train.Checkpoint(it=second).restore(path).assert_consumed()
  for want, batch in zip(expected, uninterrupted[3:]):
    assert np.array_equal(next(second)["encoder_input_tokens"].numpy(), want)
    assert np.array_equal(batch, want)


def test_epochs_come_in_different_orders(corpus_cache, default_vocab):
  # Without the Task's shuffle buffer, a batch of 24 is one epoch of the source.
  task = seqio.TaskRegistry.get("rotten_tomatoes").replace(shuffle_buffer_size=1)
  batches = _batches(task, "train", LENGTHS, 24, seed=5, count=3)
  epochs = [b["encoder_input_tokens"].tolist() for b in batches]
  assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(epochs[2])
  assert epochs[0] != epochs[1] != epochs[2]


def test_task_object_and_packing(corpus_cache, default_vocab):
  task = seqio.TaskRegistry.get("rotten_tomatoes")
  (batch,) = _batches(task, "train", {"inputs": 256, "targets": 64}, 2, pack=True,
                      count=1)
  assert set(batch) == FEATURES | {"encoder_segment_ids", "decoder_segment_ids",
                                   "encoder_positions", "decoder_positions"}
  assert batch["encoder_segment_ids"].max() > 1, "several examples share a row"


def test_mixture_object(corpus_cache, default_vocab):
  mixture = seqio.Mixture("rt_and_rank", [("rotten_tomatoes", 1.0),
                                          ("rotten_tomatoes_rank_classification", 1.0)])
  (batch,) = _batches(mixture, "train", LENGTHS, 4, count=1)
  assert set(batch) == FEATURES and batch["encoder_input_tokens"].shape == (4, 24)


def test_shards_split_the_examples(corpus_cache, default_vocab):
  def rows(shard_info=None):
    batches = _batches("rotten_tomatoes", "validation", LENGTHS, 2, shuffle=False,
                       num_epochs=1, shard_info=shard_info)
    return [tuple(r) for b in batches for r in b["encoder_input_tokens"]]

  everything = rows()
  shards = [rows(seqio.ShardInfo(index=i, num_shards=2)) for i in range(2)]
  assert len(shards[0]) == len(shards[1]) == len(everything) // 2
  assert sorted(shards[0] + shards[1]) == sorted(everything)


def test_bad_arguments_are_named(corpus_cache, default_vocab):
  with pytest.raises(ValueError, match="fewer than 64 examples"):
    get_dataset("rotten_tomatoes", "train", LENGTHS, 64)
  with pytest.raises(ValueError, match="No seqio Task or Mixture is registered as 'nope'"):
    get_dataset("nope", "train", LENGTHS, 4)
  with pytest.raises(ValueError, match="no split 'dev'"):
    get_dataset("rotten_tomatoes", "dev", LENGTHS, 4)
  with pytest.raises(ValueError, match="exactly 'inputs' and 'targets'"):
    get_dataset("rotten_tomatoes", "train", {"inputs": 8}, 4)
  with pytest.raises(ValueError, match="needs a fixed seed"):
    get_dataset("rotten_tomatoes", "train", LENGTHS, 4, seed=None, start_batch=2)
  with pytest.raises(TypeError, match="registered name or a seqio Task"):
    get_dataset(3, "train", LENGTHS, 4)
