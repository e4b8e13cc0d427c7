"""Trains a SentencePiece model with T5's conventions (pad 0, eos 1, unk 2, no bos).

    python scripts/train_spm.py --input <cache>/corpora/prose/train.tsv \
        --output_prefix prompt_tuning/assets/spiece --vocab_size 32000

(scripts/prepare_data.py writes the prose corpus.)
Use the model with `prompt_tuning.data.get_vocabulary(path)` or by setting
PROMPT_TUNING_VOCAB=<prefix>.model; 100 sentinel ids are added on load.
"""
import argparse
import sys

from prompt_tuning.data import vocab


def main(argv=None) -> str:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--input", required=True,
                      help="header-first TSV (its --text_column is read) or a text file")
  parser.add_argument("--output_prefix", required=True,
                      help="writes <prefix>.model and <prefix>.vocab")
  parser.add_argument("--vocab_size", type=int, default=32000,
                      help="pieces, without the 100 sentinels added on load")
  parser.add_argument("--text_column", default="text")
  parser.add_argument("--character_coverage", type=float, default=1.0)
  parser.add_argument("--max_sentences", type=int, default=5_000_000,
                      help="lines sampled from the input for training")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num_threads", type=int, default=1)
  args = parser.parse_args(argv)
  path = vocab.train_sentencepiece(
      args.input, args.output_prefix, args.vocab_size,
      text_column=args.text_column,
      character_coverage=args.character_coverage,
      max_sentences=args.max_sentences, seed=args.seed,
      num_threads=args.num_threads)
  print(f"wrote {path}")
  return path


if __name__ == "__main__":
  main(sys.argv[1:])
