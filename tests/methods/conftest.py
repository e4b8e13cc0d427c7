"""The methods' shared fixture: a tiny frozen T5 and a padded batch."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning.models import get_config
from prompt_tuning.models.network import T5

VOCAB = 64
TOP_TOKEN = 60  # inputs draw ids below this; higher ids are free for slots


@pytest.fixture(scope="module")
def frozen():
  """`(config, params, encoder tokens [2, 6] (row 1 padded from 4), decoder tokens [2, 4])`."""
  config = get_config("tiny", dropout_rate=0.0, vocab_size=VOCAB)
  params = nn.meta.unbox(T5(config).init_params(jax.random.PRNGKey(0)))
  rng = np.random.RandomState(0)
  enc = rng.randint(2, TOP_TOKEN, (2, 6)).astype(np.int32)
  enc[1, 4:] = 0
  dec = rng.randint(2, VOCAB, (2, 4)).astype(np.int32)
  return config, params, enc, dec
