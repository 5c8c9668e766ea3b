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
from ragrec.data._storage import (
    STORE_TEXT_PREFIX,
    add_to_catalog,
    catalog_from_store_frame,
    check_user_id,
    concat_catalogs,
    interactions_from_store_frame,
    remove_from_catalog,
    user_rows,
)
from ragrec.data._validate import OnInvalid

__all__ = [
    "DATASETS",
    "STORE_TEXT_PREFIX",
    "Catalog",
    "DataConfig",
    "DatasetSpec",
    "Interactions",
    "LeaveOneOutSplit",
    "MovieLens",
    "MovieLensLayout",
    "OnInvalid",
    "TrainTestSplit",
    "add_to_catalog",
    "catalog_from_store_frame",
    "check_user_id",
    "concat_catalogs",
    "default_cache_dir",
    "detect_layout",
    "download_dataset",
    "interactions_from_store_frame",
    "kcore",
    "leave_one_out",
    "load_movielens",
    "random_split",
    "read_table",
    "remove_from_catalog",
    "temporal_split",
    "user_rows",
    "user_sequences",
]
