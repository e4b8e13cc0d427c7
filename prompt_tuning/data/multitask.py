"""The multi-task mixture `embedded_multitask` (T0/FLAN-style) for the embedded model.

Every supervised source is rendered through several natural-language templates
(one drawn per example, from the example's stateless seed) and registered as
`multitask_<corpus>`; the mixture samples them examples-proportionally with a
cap (T5's K: a source's rate is `min(train rows, MIXTURE_CAP)`), plus the
prefix-LM objective on the prose at `LM_SHARE` of all examples, so the model
stays a language model.

Held out, and never a source here: every split of `rotten_tomatoes` and of
`reuters_r8` (the evaluation targets; `corpora.HELD_OUT` also drops any row of a
source that shares a text with them), and anything from the Debian package
r-cran-modeldata, which nothing in this repository reads.
"""
import functools
from typing import Mapping, Sequence

import seqio
import tensorflow as tf

from prompt_tuning.data import corpora
from prompt_tuning.data import tasks

MIXTURE_NAME = "embedded_multitask"
TASK_PREFIX = "multitask_"
MIXTURE_CAP = 5000
LM_SHARE = 0.25
# Texts are cut to this many words before templating, so that a template's closing
# question survives the inputs' length (128 tokens in configs/multitask.gin).
MAX_WORDS = 64

# (text before, text after) the example's text; "{options}" becomes the labels.
TEMPLATES = {
    "sentiment": [
        ("sentence: ", ""),
        ("", " Is this positive or negative?"),
        ("Text: ", " Sentiment:"),
        ("How does the writer feel? ", ""),
        ("", " All in all, the tone is"),
        ("", " Options: {options}."),
    ],
    "topic": [
        ("text: ", ""),
        ("", " What is this text about?"),
        ("Topic of the following text? ", ""),
        ("Article: ", " Category:"),
        ("", " Options: {options}."),
    ],
    "source": [
        ("text: ", ""),
        ("", " Who is this from?"),
        ("Classify: ", ""),
        ("", " Options: {options}."),
    ],
}

# corpus -> template family. Not here, ever: corpora.HELD_OUT.
SOURCES = {
    "word_sentiment": "sentiment",
    "phrase_sentiment": "sentiment",
    "silver_sentiment": "sentiment",
    "rated_sentiment": "sentiment",
    "drug_reviews": "sentiment",
    "newsgroups20": "topic",
    "bbc_news": "topic",
    "political_party": "source",
    "tweet_author": "source",
    "book_audience": "source",
}
LM_TASK = "lm_adaptation_prefix_lm"


def templates_for(corpus: str) -> list[tuple[str, str]]:
  """The (before, after) templates of `corpus`, with its labels filled in."""
  options = ", ".join(corpora.LABELS[corpus])
  return [(before.replace("{options}", options), after.replace("{options}", options))
          for before, after in TEMPLATES[SOURCES[corpus]]]


@seqio.map_over_dataset(num_seeds=1)
def apply_template(example: Mapping[str, tf.Tensor], seed,
                   templates: Sequence[tuple[str, str]]) -> dict[str, tf.Tensor]:
  """{"inputs": before + text + after, "targets": label} with one template drawn.

  The text is cut to its first `MAX_WORDS` words first.
  """
  text = tf.strings.reduce_join(tf.strings.split(example["text"])[:MAX_WORDS], separator=" ")
  index = tf.random.stateless_uniform([], seed, minval=0, maxval=len(templates),
                                      dtype=tf.int32)
  before = tf.gather(tf.constant([t[0] for t in templates]), index)
  after = tf.gather(tf.constant([t[1] for t in templates]), index)
  return {"inputs": tf.strings.join([before, text, after]),
          "targets": example["label"]}


def train_rows(corpus: str) -> int:
  """Rows in a prepared corpus's train split (the corpora's error if not prepared)."""
  corpora.corpus_path(corpus, "train")
  return corpora.read_meta(corpus)["splits"]["train"]["rows"]


def source_rate(corpus: str, cap: int = MIXTURE_CAP) -> float:
  """Examples-proportional mixing with a cap: min(train rows, cap)."""
  return float(min(train_rows(corpus), cap))


def lm_rate(share: float = LM_SHARE, cap: int = MIXTURE_CAP) -> float:
  """The prefix-LM task's rate, so that it draws `share` of all examples."""
  supervised = sum(source_rate(c, cap) for c in SOURCES)
  return share / (1.0 - share) * supervised


def register() -> seqio.Mixture:
  """Registers the `multitask_<corpus>` tasks and the mixture (once)."""
  for corpus in SOURCES:
    name = TASK_PREFIX + corpus
    if name in seqio.TaskRegistry.names():
      continue
    seqio.TaskRegistry.add(
        name, source=tasks.corpus_source(corpus),
        preprocessors=[functools.partial(apply_template, templates=templates_for(corpus)),
                       *tasks.TOKENIZE],
        output_features=tasks.output_features(), metric_fns=[])
  if MIXTURE_NAME not in seqio.MixtureRegistry.names():
    entries = [(TASK_PREFIX + c, lambda _task, c=c: source_rate(c)) for c in SOURCES]
    entries.append((LM_TASK, lambda _task: lm_rate()))
    seqio.MixtureRegistry.add(MIXTURE_NAME, entries)
  return seqio.get_mixture_or_task(MIXTURE_NAME)


register()
