"""prompt-tuning."""
