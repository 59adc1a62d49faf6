"""Skeleton feeders: augmentations (augmentations.py) and datasets over prepared splits (feeder.py)."""
from feeder.feeder import DownstreamDataset, PretrainDataset

__all__ = ["DownstreamDataset", "PretrainDataset"]
