"""The dataset's Sentinel-2 Level-1C bands and the scaling of their digital numbers.

The paper's data (arXiv:2502.12300) are the red, green and blue bands of Sentinel-2 Level-1C
products: digital numbers (DN), top-of-atmosphere reflectance times ``DN_PER_REFLECTANCE``.
The models work in the units ``dn * 2 / 10000 - 1`` (reflectance 0..1 maps to -1..1). Every
script that reads, writes or makes such data (make_dataset_npys.py, make_synthetic_dataset.py,
superresolve.py) takes the names and the scaling from here.

Products of ESA's processing baseline 04.00 and later (from January 2022) shift their digital
numbers: ``reflectance = (DN + offset) / QUANTIFICATION_VALUE`` with offset
``BASELINE_04_ADD_OFFSET`` in every band (``RADIO_ADD_OFFSET`` of Level-1C, ``BOA_ADD_OFFSET``
of Level-2A, both in the product metadata). The scaling functions take both numbers; their
defaults are the dataset's (offset 0).
"""

from __future__ import annotations

import numpy as np

BANDS = ("B04", "B03", "B02")
"""Variables read from each file, in channel order (R, G, B)."""

DN_PER_REFLECTANCE = 10000
"""Level-1C digital numbers per unit of reflectance (ESA's ``QUANTIFICATION_VALUE``)."""

BASELINE_04_ADD_OFFSET = -1000
"""The offset added to digital numbers before dividing by ``QUANTIFICATION_VALUE`` in products
of processing baseline 04.00 and later (Level-1C and Level-2A)."""


def dn_to_model_units(
    dn: np.ndarray, quantification_value: float = DN_PER_REFLECTANCE, add_offset: float = 0
) -> np.ndarray:
    """Digital numbers -> the paper's units ``2 reflectance - 1`` with ``reflectance = (dn +
    add_offset) / quantification_value`` (the dataset's: ``dn * 2 / 10000 - 1``), float64, same
    shape (values can exceed 16383, so no integer arithmetic)."""
    return (np.asarray(dn).astype(np.float64) + add_offset) * 2 / quantification_value - 1


def model_units_to_dn(
    units: np.ndarray, quantification_value: float = DN_PER_REFLECTANCE, add_offset: float = 0
) -> np.ndarray:
    """The inverse of :func:`dn_to_model_units`, float64, same shape."""
    return (np.asarray(units).astype(np.float64) + 1) * quantification_value / 2 - add_offset
