"""The dataset's Sentinel-2 Level-1C bands and the scaling of their digital numbers.

The paper's data (arXiv:2502.12300) are the red, green and blue bands of Sentinel-2 Level-1C
products: digital numbers (DN), top-of-atmosphere reflectance times ``DN_PER_REFLECTANCE``.
The models work in the units ``dn * 2 / 10000 - 1`` (reflectance 0..1 maps to -1..1). Every
script that reads, writes or makes such data (make_dataset_npys.py, make_synthetic_dataset.py,
superresolve.py) takes the names and the scaling from here.
"""

from __future__ import annotations

import numpy as np

BANDS = ("B04", "B03", "B02")
"""Variables read from each file, in channel order (R, G, B)."""

DN_PER_REFLECTANCE = 10000
"""Level-1C digital numbers per unit of reflectance."""


def dn_to_model_units(dn: np.ndarray) -> np.ndarray:
    """Digital numbers -> the paper's units ``dn * 2 / 10000 - 1``, float64, same shape (values
    can exceed 16383, so no integer arithmetic)."""
    return np.asarray(dn).astype(np.float64) * 2 / DN_PER_REFLECTANCE - 1


def model_units_to_dn(units: np.ndarray) -> np.ndarray:
    """The inverse of :func:`dn_to_model_units`, float64, same shape."""
    return (np.asarray(units).astype(np.float64) + 1) * DN_PER_REFLECTANCE / 2
