"""Packed rows (seqio's pack=True): each example sees only itself, so a packed row scores
exactly what its examples score one per row."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf

from prompt_tuning.models import get_config
from prompt_tuning.models.network import T5
from prompt_tuning.prompts import from_sampled_vocab, prompted_t5
from prompt_tuning.train import step as step_lib

CONFIG = get_config("tiny", dropout_rate=0.0)
EXAMPLES = [([5, 6, 7, 1], [8, 9, 1]), ([10, 11, 12, 13, 14, 1], [15, 1]),
            ([20, 21, 1], [22, 23, 24, 1])]
LENGTHS = {"inputs": 16, "targets": 12}


@pytest.fixture(scope="module")
def params():
  return nn.meta.unbox(T5(CONFIG).init_params(jax.random.PRNGKey(0)))


def _packed_by_seqio():
  ds = tf.data.Dataset.from_generator(
      lambda: ({"inputs": np.array(i, np.int32), "targets": np.array(t, np.int32)}
               for i, t in EXAMPLES),
      output_signature={"inputs": tf.TensorSpec([None], tf.int32),
                        "targets": tf.TensorSpec([None], tf.int32)})
  rows = list(seqio.EncDecFeatureConverter(pack=True)(ds, LENGTHS).as_numpy_iterator())
  assert len(rows) == 1, "the three examples fit one packed row"
  return {k: v[None] for k, v in rows[0].items()}


def _one_example(inputs, targets):
  return {"encoder_input_tokens": np.array([inputs], np.int32),
          "decoder_input_tokens": np.array([[0] + targets[:-1]], np.int32),
          "decoder_target_tokens": np.array([targets], np.int32)}


def test_a_packed_row_gives_each_example_its_unpacked_logits(params):
  row = _packed_by_seqio()
  assert set(row["encoder_segment_ids"][0][:13]) == {1, 2, 3}
  model = T5(CONFIG)
  packed = model.apply({"params": params}, row["encoder_input_tokens"],
                       row["decoder_input_tokens"], row["decoder_target_tokens"],
                       encoder_segment_ids=row["encoder_segment_ids"],
                       decoder_segment_ids=row["decoder_segment_ids"])
  start = 0
  for inputs, targets in EXAMPLES:
    alone = _one_example(inputs, targets)
    ref = model.apply({"params": params}, alone["encoder_input_tokens"],
                      alone["decoder_input_tokens"], alone["decoder_target_tokens"])
    got = packed[0, start:start + len(targets)]
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref[0]), rtol=1e-5, atol=1e-5)
    start += len(targets)
  # Without the segment ids the same row mixes the examples: the test can tell.
  mixed = model.apply({"params": params}, row["encoder_input_tokens"],
                      row["decoder_input_tokens"], row["decoder_target_tokens"])
  assert not np.allclose(np.asarray(mixed[0, 3:5]), np.asarray(packed[0, 3:5]), atol=1e-3)


def test_the_train_loss_of_a_packed_batch_is_the_unpacked_examples_loss(params):
  row = _packed_by_seqio()
  config = step_lib.LossConfig(z_loss=0.0)
  loss, metrics = step_lib.compute_loss(T5(CONFIG), params, row, config, None, train=False)
  token_losses = []
  for inputs, targets in EXAMPLES:
    logits = T5(CONFIG).apply({"params": params}, *_one_example(inputs, targets).values())
    log_p = jax.nn.log_softmax(np.asarray(logits[0], np.float64), axis=-1)
    token_losses += [-float(log_p[i, t]) for i, t in enumerate(targets)]
  assert float(metrics["num_target_tokens"]) == len(token_losses)
  assert float(loss) == pytest.approx(np.mean(token_losses), rel=1e-5)


def test_segment_ids_are_refused_where_they_cannot_hold(params):
  row = _packed_by_seqio()
  model = T5(CONFIG)
  with pytest.raises(ValueError, match="both encoder_segment_ids and decoder_segment_ids"):
    model.apply({"params": params}, row["encoder_input_tokens"], row["decoder_input_tokens"],
                row["decoder_target_tokens"], encoder_segment_ids=row["encoder_segment_ids"])
  prompted = prompted_t5(CONFIG, 2, from_sampled_vocab(50))
  with pytest.raises(ValueError, match="pack=False"):
    prompted.init(jax.random.PRNGKey(0), jnp.asarray(row["encoder_input_tokens"]),
                  method=T5.encode, encoder_segment_ids=jnp.asarray(row["encoder_segment_ids"]))


def test_the_trainer_hands_packed_rows_segment_ids_to_the_loss(tmp_path, monkeypatch):
  """`train.pack = True` end to end: the batches the trainer feeds its step keep seqio's
  segment ids (they were once filtered out before the step, so packed examples mixed)."""
  from prompt_tuning.data import corpora, get_dataset
  from prompt_tuning.train import trainer
  corpora.prepare(["prose"], verbose=False)
  task, lengths = "lm_adaptation_prefix_lm", {"inputs": 32, "targets": 32}
  first = next(get_dataset(task, "train", lengths, 8, shuffle=True, seed=0,
                           pack=True).as_numpy_iterator())
  assert first["encoder_segment_ids"].max() > 1, "some row holds several examples"
  seen = []
  real = step_lib.compute_loss

  def spy(model, params, batch, *args, **kwargs):
    seen.append(sorted(batch))
    return real(model, params, batch, *args, **kwargs)

  monkeypatch.setattr(step_lib, "compute_loss", spy)
  trainer.train(model_dir=str(tmp_path / "run"),
                mixture_or_task_name=task, task_feature_lengths=lengths,
                batch_size=8, train_steps=1, checkpoint_period=1, eval_period=None,
                model=trainer.ModelSpec(preset="tiny", mode="full", dropout_rate=0.0),
                loss_config=step_lib.LossConfig(enable_dropout=False), pack=True, seed=0)
  assert seen and all({"encoder_segment_ids", "decoder_segment_ids"} <= set(k) for k in seen)


def test_model_features_keeps_what_the_step_reads():
  row = _packed_by_seqio()
  kept = step_lib.model_features(row)
  assert set(kept) == set(step_lib.BATCH_KEYS) | {"decoder_loss_weights",
                                                  "encoder_segment_ids", "decoder_segment_ids"}
  assert "encoder_positions" in row and "encoder_positions" not in kept
  # Mixed-task batches carry each example's task id for per-task prompts.
  task_ids = np.zeros(len(row["encoder_input_tokens"]), np.int32)
  with_tasks = step_lib.model_features({**row, "task_ids": task_ids})
  assert "task_ids" in with_tasks
  with pytest.raises(KeyError, match="decoder_target_tokens"):
    step_lib.model_features({"encoder_input_tokens": row["encoder_input_tokens"],
                             "decoder_input_tokens": row["decoder_input_tokens"]})
