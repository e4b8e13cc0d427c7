"""Data: the T5 vocabulary, seqio preprocessors and tasks, and batches for the model.

Importing this package registers the tasks listed in `tasks`.
"""
from prompt_tuning.data import tasks
from prompt_tuning.data import multitask  # registers embedded_multitask
from prompt_tuning.data.pipeline import get_dataset
from prompt_tuning.data.tasks import task_vocabulary
from prompt_tuning.data.tasks import tsv_classification_task
from prompt_tuning.data.tasks import tsv_text_task
from prompt_tuning.data.vocab import get_vocabulary
from prompt_tuning.data.vocab import train_sentencepiece
