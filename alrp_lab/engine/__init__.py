"""The training engine: the loop, evaluation, checkpoints and multi-process helpers."""
