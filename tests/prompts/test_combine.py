"""Prompt placements against a plain numpy construction of the expected sequences."""
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning.prompts import combine

RNG = np.random.RandomState(0)
X = RNG.randn(3, 5, 4).astype(np.float32)
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], bool)
P = RNG.randn(2, 4).astype(np.float32)


def _expected(kind, prompt):
  xs, masks = [], []
  for b in range(3):
    pb = prompt if prompt.ndim == 2 else prompt[b]
    n = int(MASK[b].sum())
    if kind == "prefix":
      x = np.concatenate([pb, X[b]])
      m = np.concatenate([np.ones(2, bool), MASK[b]])
    elif kind == "after_bos":
      x = np.concatenate([X[b, :1], pb, X[b, 1:]])
      m = np.concatenate([MASK[b, :1], np.ones(2, bool), MASK[b, 1:]])
    else:
      x = np.concatenate([X[b, :n], pb, X[b, n:]])
      m = np.arange(7) < n + 2
    xs.append(x)
    masks.append(m)
  return np.stack(xs), np.stack(masks)


@pytest.mark.parametrize("kind", ["prefix", "after_bos", "suffix"])
@pytest.mark.parametrize("per_example", [False, True])
def test_placement_matches_numpy(kind, per_example):
  prompt = np.stack([P, P * 2, P * 3]) if per_example else P
  x, m = combine.get_combine_fn(kind)(jnp.asarray(prompt), jnp.asarray(X), jnp.asarray(MASK))
  ex, em = _expected(kind, prompt)
  np.testing.assert_array_equal(np.asarray(m), em)
  # Only real positions (and the prompt) are defined; padding content may differ.
  np.testing.assert_allclose(np.asarray(x)[em], ex[em], rtol=0, atol=0)


def test_mask_grows_by_prompt_length():
  _, m = combine.prefix(jnp.asarray(P), jnp.asarray(X), jnp.asarray(MASK))
  np.testing.assert_array_equal(np.asarray(m).sum(1), MASK.sum(1) + 2)


def test_wrong_width_or_batch_is_named():
  with pytest.raises(ValueError, match=r"prompt of shape \(2, 3\) does not fit inputs"):
    combine.prefix(jnp.ones((2, 3)), jnp.asarray(X), jnp.asarray(MASK))
  with pytest.raises(ValueError, match="does not fit"):
    combine.prefix(jnp.ones((2, 2, 4)), jnp.asarray(X), jnp.asarray(MASK))
  with pytest.raises(ValueError, match="unknown prompt placement 'middle'"):
    combine.get_combine_fn("middle")
