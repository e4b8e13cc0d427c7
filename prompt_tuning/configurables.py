"""Imports every gin-configurable of the package, so gin files can name them."""
import gin

from prompt_tuning import data  # noqa: F401  (tsv_classification_task, tsv_text_task, tasks)
from prompt_tuning.data import vocab as _vocab
from prompt_tuning.models import config as _config
from prompt_tuning.prompts import initializers  # noqa: F401
from prompt_tuning import methods  # noqa: F401  (PrefixTuning, PTuning, DeepPrompts)
from prompt_tuning.train import optimizers, partitioning, step, trainer  # noqa: F401
from prompt_tuning import assets  # noqa: F401  (embedded_model_path)
from prompt_tuning import host_memory  # noqa: F401  (host_memory.retain_freed)

gin.external_configurable(_config.get_config, "get_config")
gin.external_configurable(_vocab.get_vocabulary, "get_vocabulary")
gin.external_configurable(data.task_vocabulary, "task_vocabulary")
