"""Paths tests share: the repository root and `../shared/reference` beside it."""
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO_ROOT.parent / "shared" / "reference"
