"""Data: the T5 vocabulary, seqio preprocessors and tasks, and batches for the model."""
from prompt_tuning.data.vocab import get_vocabulary
from prompt_tuning.data.vocab import train_sentencepiece
