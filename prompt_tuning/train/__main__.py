"""`python -m prompt_tuning.train --gin_file=... --gin.NAME=VALUE`: train as gin says."""
import sys

from prompt_tuning import gin_utils


def _train():
  # Imported here, after gin_utils.run has set the verbosity: it imports TensorFlow.
  from prompt_tuning.train import trainer
  return trainer.train()


def main(argv=None) -> int:
  return gin_utils.run(_train, argv, prog="prompt_tuning.train")


if __name__ == "__main__":
  sys.exit(main())
