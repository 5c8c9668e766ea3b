"""Catalog and interaction data: models, loaders, filters and splits."""

from ragrec.data._config import DataConfig
from ragrec.data._download import DATASETS, DatasetSpec, default_cache_dir, download_dataset
from ragrec.data._io import read_table
from ragrec.data._models import Catalog, Interactions
from ragrec.data._movielens import MovieLens, MovieLensLayout, detect_layout, load_movielens
from ragrec.data._splits import (
    LeaveOneOutSplit,
    TrainTestSplit,
    kcore,
    leave_one_out,
    random_split,
    temporal_split,
    user_sequences,
)
from ragrec.data._validate import OnInvalid

__all__ = [
    "DATASETS",
    "Catalog",
    "DataConfig",
    "DatasetSpec",
    "Interactions",
    "LeaveOneOutSplit",
    "MovieLens",
    "MovieLensLayout",
    "OnInvalid",
    "TrainTestSplit",
    "default_cache_dir",
    "detect_layout",
    "download_dataset",
    "kcore",
    "leave_one_out",
    "load_movielens",
    "random_split",
    "read_table",
    "temporal_split",
    "user_sequences",
]
