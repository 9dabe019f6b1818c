"""Moved to :mod:`vaeaug.augmented_dataset`."""

from .augmented_dataset import VAEAugmentedDataset  # noqa: F401
