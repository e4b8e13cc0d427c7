"""Token losses and sequence scores from logits; padding (weight 0) never counts."""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def cross_entropy(logits: Array, targets: Array, z_loss: float = 0.0,
                  label_smoothing: float = 0.0) -> tuple[Array, Array]:
  """T5X's cross-entropy: `[batch, length, vocab]` logits → per-token (loss, z-loss part).

  Label smoothing puts `1 - label_smoothing` on the target and spreads the rest over the
  other `vocab - 1` ids, minus the soft targets' entropy so a perfect model scores 0.
  The z-loss `z_loss * logsumexp(logits)**2` keeps the softmax normaliser near 1.
  Both returned arrays are `[batch, length]` float32; the loss includes the z-loss.
  """
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
  logits = logits.astype(jnp.float32)
  vocab = logits.shape[-1]
  log_z = jax.nn.logsumexp(logits, axis=-1)
  log_probs = logits - log_z[..., None]
  target_log_prob = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  if label_smoothing > 0:
    on, off = 1.0 - label_smoothing, label_smoothing / (vocab - 1)
    entropy = -(on * jnp.log(on) + (vocab - 1) * off * jnp.log(off + 1e-20))
    loss = -(on - off) * target_log_prob - off * jnp.sum(log_probs, axis=-1) - entropy
  else:
    loss = -target_log_prob
  z = z_loss * jnp.square(log_z)
  return loss + z, z


def sequence_log_likelihood(logits: Array, targets: Array, weights: Array) -> Array:
  """Σ over real target positions of log p(target): `[batch]`, for rank classification."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  token = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(token * weights, axis=-1)
