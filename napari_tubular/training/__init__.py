"""Training of DDT segmentation models (torch): :class:`TrainConfig`, :func:`train`.

``python -m napari_tubular.training ...`` takes the arguments of ``napari-tubular train`` (for
``torchrun --nproc_per_node N -m napari_tubular.training ...``).
"""

from .config import LOSSES, TrainConfig
from .data import (
    PreparedCase,
    SyntheticPool,
    find_pairs,
    make_synthetic_case,
    pregenerate_synthetic,
    prepare_case,
    resample,
)
from .loop import (
    DEFAULT_NORMALIZATION,
    Cancelled,
    TrainingDiverged,
    init_model_would_be_replaced,
    plot_curves,
    run_folder_in_use,
    train,
    validate,
)

__all__ = [
    "DEFAULT_NORMALIZATION",
    "LOSSES",
    "Cancelled",
    "PreparedCase",
    "SyntheticPool",
    "TrainConfig",
    "TrainingDiverged",
    "find_pairs",
    "init_model_would_be_replaced",
    "make_synthetic_case",
    "plot_curves",
    "prepare_case",
    "pregenerate_synthetic",
    "resample",
    "run_folder_in_use",
    "train",
    "validate",
]
