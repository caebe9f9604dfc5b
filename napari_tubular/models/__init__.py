"""Networks and model files (torch).

* :class:`TubularUNet`, :func:`build_model`: 3-D U-Net with the DDT dual head.
* :func:`save_model`, :func:`load_model`, :class:`ModelFormatError`: model files with their meta.
* :func:`normalize_intensity`: the intensity normalisation shared by training and inference.
"""

from .normalization import NORMALIZATION_KINDS, normalize_intensity, validate_normalization
from .serialization import (
    DEFAULT_MODEL_PATH,
    FORMAT,
    FORMAT_VERSION,
    ModelFormatError,
    load_model,
    read_model_file,
    read_model_meta,
    resolve_device,
    resolve_model_path,
    save_model,
    write_model_copy,
)
from .unet import ARCH_NAME, TubularUNet, build_model

__all__ = [
    "ARCH_NAME",
    "DEFAULT_MODEL_PATH",
    "FORMAT",
    "FORMAT_VERSION",
    "NORMALIZATION_KINDS",
    "ModelFormatError",
    "TubularUNet",
    "build_model",
    "load_model",
    "normalize_intensity",
    "read_model_file",
    "read_model_meta",
    "resolve_device",
    "resolve_model_path",
    "save_model",
    "validate_normalization",
    "write_model_copy",
]
