"""Small DICOM series written slice by slice, for the reader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom_series(folder: Path, ct: np.ndarray, spacing, origin, *,
                       uid: str = "1.2.826.0.1.3680043.9.7433.2.1", prefix: str = "im"
                       ) -> list[str]:
    """Write ``ct`` (int16, (Z, Y, X)) as one ``.dcm`` file per z slice into ``folder``, as one
    series (Series Instance UID ``uid``) with the given spacing and origin (z, y, x, mm).

    Returns:
        The file paths, slice order.
    """
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(np.asarray(ct, dtype=np.int16))
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    img.SetOrigin(tuple(float(o) for o in origin[::-1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(ct.shape[0]):
        sl = img[:, :, k : k + 1]
        pos = "\\".join(f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k)))
        for tag, value in {
            "0020|000d": uid + ".0",
            "0020|000e": uid,
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": pos,
            "0020|0013": str(k + 1),
            "0008|0018": f"{uid}.{k + 1}",
        }.items():
            sl.SetMetaData(tag, value)
        files.append(str(folder / f"{prefix}{k}.dcm"))
        writer.SetFileName(files[-1])
        writer.Execute(sl)
    return files
