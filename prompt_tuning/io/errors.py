"""The one exception type every reader and writer in `prompt_tuning.io` raises."""


class CheckpointError(ValueError):
  """A checkpoint or prompt file is missing, malformed, or does not fit the model.

  The message names the file or tensor at fault and, where there is one, the fix.
  """
