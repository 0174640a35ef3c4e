"""Datasets: the built-in procedural data, the real benchmarks and their cache, batch samplers and false-negative
statistics."""

from .builtin import BuiltinAVDataset, BuiltinSpec, builtin_splits
from .cache import CachedAVDataset
from .real import RealAVDataset
from .sampling import ClassBiasedBatchSampler, ShuffledBatchSampler, false_negative_ratio

__all__ = ["BuiltinAVDataset", "BuiltinSpec", "builtin_splits", "ClassBiasedBatchSampler", "ShuffledBatchSampler",
           "false_negative_ratio", "CachedAVDataset", "RealAVDataset"]
