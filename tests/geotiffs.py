"""The small georeferenced GeoTIFFs that the tiling and superresolve tests write (rasterio)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

CRS = "EPSG:32635"
TRANSFORM = from_origin(300_000, 7_000_000, 10, 10)


def write_geotiff(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    """``data`` (band, y, x) as a GeoTIFF at ``path`` in `CRS` with `TRANSFORM`."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=CRS,
        transform=TRANSFORM,
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return path
