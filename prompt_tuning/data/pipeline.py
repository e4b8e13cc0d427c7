"""Batches of model features from a seqio Task or Mixture, resumable by position.

Given a seed, the pipeline (source order, preprocessing randomness, shuffle) is
deterministic, so batch n is always the same batch: a run restarted with
`start_batch=n` continues with exactly the data it would have seen.
"""
import difflib
from typing import Mapping, Optional, Union

import seqio
import tensorflow as tf

# Registers the tasks, so names resolve.
from prompt_tuning.data import tasks as _tasks  # pylint: disable=unused-import

Provider = Union[str, seqio.Task, seqio.Mixture]


def _provider(mixture_or_task: Provider) -> Union[seqio.Task, seqio.Mixture]:
  if isinstance(mixture_or_task, (seqio.Task, seqio.Mixture)):
    return mixture_or_task
  if not isinstance(mixture_or_task, str):
    raise TypeError("mixture_or_task must be a registered name or a seqio Task "
                    f"or Mixture, got {type(mixture_or_task).__name__}.")
  names = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  if mixture_or_task not in names:
    close = difflib.get_close_matches(mixture_or_task, sorted(names), n=3)
    hint = (f"did you mean {', '.join(map(repr, close))}?" if close else
            f"registered are {len(names)} names, e.g. {', '.join(sorted(names)[:5])}.")
    raise ValueError(f"No seqio Task or Mixture is registered as "
                     f"{mixture_or_task!r}; {hint} Set MIXTURE_OR_TASK_NAME to a "
                     "registered name or to @tsv_classification_task().")
  return seqio.get_mixture_or_task(mixture_or_task)


def get_dataset(mixture_or_task: Provider,
                split: str,
                task_feature_lengths: Mapping[str, int],
                batch_size: int,
                shuffle: bool = True,
                seed: Optional[int] = 0,
                pack: bool = False,
                num_epochs: Optional[int] = None,
                shard_info: Optional[seqio.ShardInfo] = None,
                start_batch: int = 0,
                use_cached: bool = False) -> tf.data.Dataset:
  """A tf.data.Dataset of batches of encoder-decoder model features.

  Features: encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
  decoder_loss_weights.
  Each feature is int32 [batch_size, length] (lengths from
  `task_feature_lengths["inputs"]` / `["targets"]`), made by seqio's
  `EncDecFeatureConverter`; with `pack=True` several examples share a row and
  segment ids and positions are added. `num_epochs=None` repeats forever.
  Partial batches are dropped, and a split without one full batch is an
  error. `start_batch` skips that many batches of the same deterministic
  stream (requires a `seed`); it re-runs the skipped batches, so long runs
  checkpoint the iterator instead (`train.save_data_iterator`: a
  `tf.train.Checkpoint` of `iter(ds)`; the pipeline keeps one structure for
  it, see `skip_batches`). `shard_info` reads one host's share. Iterate with
  `.as_numpy_iterator()`.
  """
  provider = _provider(mixture_or_task)
  if split not in provider.splits:
    raise ValueError(f"{provider.name} has no split {split!r}; its splits are "
                     f"{list(provider.splits)}.")
  if set(task_feature_lengths) != {"inputs", "targets"}:
    raise ValueError("task_feature_lengths must give exactly 'inputs' and "
                     f"'targets', got {dict(task_feature_lengths)}.")
  if batch_size < 1 or start_batch < 0:
    raise ValueError(f"Need batch_size >= 1 and start_batch >= 0, got "
                     f"{batch_size} and {start_batch}.")
  if start_batch and seed is None:
    raise ValueError("start_batch needs a fixed seed; without one the shuffle and "
                     "the preprocessing randomness differ on every run.")

  def batches(shuffle, num_epochs):
    return seqio.get_dataset(
        provider, task_feature_lengths,
        seqio.EncDecFeatureConverter(pack=pack), dataset_split=split,
        use_cached=use_cached, shuffle=shuffle, num_epochs=num_epochs,
        shard_info=shard_info, seed=seed, batch_size=batch_size, verbose=False)

  # Unshuffled, so only the first batch's examples are preprocessed.
  if not any(True for _ in batches(False, 1).take(1)):
    shard = f" (shard {shard_info.index} of {shard_info.num_shards})" if shard_info else ""
    raise ValueError(
        f"{provider.name}:{split}{shard} yields fewer than {batch_size} examples"
        f"{' after packing' if pack else ''}, so not one full batch; add data or "
        "lower batch_size.")
  return skip_batches(batches(shuffle, num_epochs), start_batch).prefetch(tf.data.AUTOTUNE)


def skip_batches(ds: tf.data.Dataset, start_batch: int) -> tf.data.Dataset:
  """`ds.skip(start_batch)`, kept in the graph even for 0 (tf.data would drop a no-op
  skip), so an iterator saved by a run that started at batch n restores into the same
  pipeline built at batch 0."""
  options = tf.data.Options()
  options.experimental_optimization.noop_elimination = False
  return ds.skip(start_batch).with_options(options)
