"""Skeleton feeders: augmentations (augmentations.py) and datasets over prepared splits (feeder.py).

The datasets are imported on first use (PEP 562): they need torch, and the data converters, which read
the protocol table and through it feeder.augmentations, would otherwise wait seconds for it on start.
"""
__all__ = ["DownstreamDataset", "PretrainDataset"]


def __getattr__(name):
    if name in __all__:
        from feeder import feeder
        return getattr(feeder, name)
    raise AttributeError(f"module 'feeder' has no attribute {name!r}")
