"""Files shipped with the package: the SentencePiece vocabulary and embedded models."""
import pathlib

import gin

ASSETS_DIR = pathlib.Path(__file__).resolve().parent
EMBEDDED_MODELS = ("t5_lm_adapted", "t5_span_corruption", "t5_multitask")


@gin.configurable
def embedded_model_path(name: str = "t5_lm_adapted") -> str:
  """The directory of an embedded model (Hugging Face layout) shipped in the package."""
  if name not in EMBEDDED_MODELS:
    raise ValueError(f"unknown embedded model {name!r}; choose one of {EMBEDDED_MODELS}")
  path = ASSETS_DIR / name
  if not (path / "config.json").is_file():
    raise FileNotFoundError(
        f"the embedded model {name!r} is not in this installation ({path}); pass a model with "
        "--gin.INITIAL_CHECKPOINT_PATH (python -m prompt_tuning.scripts.make_random_model "
        "writes a small random one)")
  return str(path)
