"""Moved to :mod:`vaeaug.evaluation`."""

from .evaluation import ARMS, AugmentSetting, evaluate, reduce_per_class, report_markdown  # noqa: F401
