"""`python -m prompt_tuning.train --gin_file=... --gin.NAME=VALUE`: train as gin says."""
import sys

from prompt_tuning import gin_utils


def main(argv=None) -> int:
  from prompt_tuning.train import trainer
  return gin_utils.run(lambda: trainer.train(), argv, prog="prompt_tuning.train")


if __name__ == "__main__":
  sys.exit(main())
