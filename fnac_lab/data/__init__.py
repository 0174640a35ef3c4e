"""Datasets: the built-in procedural data, batch samplers and false-negative statistics."""

from .builtin import BuiltinAVDataset, BuiltinSpec, builtin_splits
from .sampling import ClassBiasedBatchSampler, ShuffledBatchSampler, false_negative_ratio

__all__ = ["BuiltinAVDataset", "BuiltinSpec", "builtin_splits", "ClassBiasedBatchSampler", "ShuffledBatchSampler",
           "false_negative_ratio"]
