"""Raster input and output for tiled processing: readers by window for GeoTIFF (and anything
GDAL reads), NetCDF, Zarr, .npy and in-memory arrays; georeferencing; the output as an
xarray-layout Zarr dataset and as a Cloud-Optimized GeoTIFF.

Georeferencing is a CRS (WKT) and an affine transform ``(a, b, c, d, e, f)`` in rasterio /
GDAL order: ``x = a col + b row + c``, ``y = d col + e row + f`` at pixel corners. An output
``s`` times finer keeps the origin and divides the pixel size by ``s``.

The Zarr output (and the staging store of a GeoTIFF output) is what ``xarray.open_zarr`` and
GDAL both read: Zarr format 2 with consolidated metadata, variable ``data`` with dims
``(band, y, x)``, pixel-centre coordinates ``y`` and ``x``, and a CF grid mapping variable
``spatial_ref`` (``crs_wkt``, ``spatial_ref``, ``GeoTransform``) named by ``data``'s
``grid_mapping`` attribute; nodata is the CF ``_FillValue``. The GeoTIFF output is made from
that store by GDAL's COG driver (internal tiles, overviews, deflate), never held whole.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from tiling import Span, TilingError

GEOTIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIX = ".zarr"
DATA_VARIABLE = "data"
GRID_MAPPING = "spatial_ref"
DESCRIPTION = "description"  # the coordinate of band descriptions
COG_BLOCK = 512
# Classic TIFF ends at 4 GiB. A COG holds the image, overviews (1/4 + 1/16 + ... < 1/3 of it)
# and tile indexes; deflate can make incompressible data slightly larger. BigTIFF is chosen
# when the uncompressed image with overviews, plus 2 %, could pass this limit.
TIFF_LIMIT = 2**32 - 2**24
# GDAL's block cache while it writes the COG, in bytes (rasterio passes an int to
# GDALSetCacheMax64 as bytes, not as GDAL's megabytes). Too small a cache makes GDAL flush
# overview blocks half done and write them again, leaving dead space in its temporary overview
# file: twice its size, and slower.
GDAL_CACHE_BYTES = 256 * 2**20


@dataclasses.dataclass(frozen=True)
class RasterInfo:
    """What a reader knows of its raster (``count`` = bands selected)."""

    count: int
    height: int
    width: int
    dtype: str
    crs: str | None  # WKT
    transform: tuple[float, ...] | None  # affine a..f
    nodata: float | None
    descriptions: tuple[str | None, ...] | None = None  # of the selected bands, where the format has them


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """Which raster to read and how: picklable, so that Dask workers open their own reader.
    ``path`` is absolute (workers may run elsewhere)."""

    path: str
    bands: tuple[int | str, ...] | None = None  # band numbers from 1 (NetCDF: variable names); None: all
    nodata: float | None = None  # overrides the file's nodata value


class Reader(Protocol):
    info: RasterInfo

    def read(self, rows: Span, cols: Span) -> np.ndarray:
        """Raw values of the selected bands in the window (inside the raster): (band, h, w)."""

    def masked(self, rows: Span, cols: Span) -> np.ndarray | None:
        """Pixels of the window (h, w) that the raster's own mask marks invalid in any selected
        band (GDAL mask bands: internal masks, alpha), or None where it has no such mask.
        Nodata values and NaN are the caller's business (``nodata`` may be overridden)."""


def _band_indexes(path: str, bands: Sequence[int | str] | None, count: int) -> list[int]:
    """0-based indexes of the bands to read from a ``count``-band raster."""
    if bands is None:
        return list(range(count))
    try:
        numbers = [int(b) for b in bands]
    except (TypeError, ValueError):
        raise TilingError(f"bands must be band numbers from 1 for {path}, got {', '.join(map(str, bands))}") from None
    if not numbers or any(not 1 <= n <= count for n in numbers):
        raise TilingError(f"bands {', '.join(map(str, bands))}: {path} has bands 1..{count}")
    return [n - 1 for n in numbers]


class GeoTiffReader:
    """GeoTIFF (or any raster GDAL opens), read by windows with rasterio. Default bands: all but
    an alpha band. Pixels that GDAL's mask band (an internal or ``.msk`` mask, or the alpha
    band) marks with 0 are invalid, like nodata."""

    def __init__(self, spec: SourceSpec):
        import rasterio
        from rasterio.enums import ColorInterp, MaskFlags

        try:
            with warnings.catch_warnings():  # a plain image without georeferencing is fine
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self.dataset = rasterio.open(spec.path)
        except Exception as e:  # rasterio raises RasterioIOError and friends; name the file
            raise TilingError(f"cannot read {spec.path} as a raster ({type(e).__name__}: {e})") from None
        ds = self.dataset
        if spec.bands is None:  # an alpha band is the mask of the others, not data
            self.indexes = [i for i in range(1, ds.count + 1) if ds.colorinterp[i - 1] != ColorInterp.alpha]
            if not self.indexes:
                raise TilingError(f"{spec.path} has only an alpha band; pick bands to read")
        else:
            self.indexes = [i + 1 for i in _band_indexes(spec.path, spec.bands, ds.count)]
        # Bands whose validity GDAL reads from a mask band (an internal or .msk mask, or an
        # alpha band): their mask's zeros are invalid pixels. Nodata masks are left out, since
        # the nodata value may be overridden.
        flags = {i: set(ds.mask_flag_enums[i - 1]) for i in self.indexes}
        self.mask_indexes = [
            i
            for i in self.indexes
            if flags[i] & {MaskFlags.per_dataset, MaskFlags.alpha} and MaskFlags.nodata not in flags[i]
        ]
        if self.mask_indexes and all(MaskFlags.per_dataset in flags[i] for i in self.mask_indexes):
            self.mask_indexes = self.mask_indexes[:1]  # one mask for all bands: read it once
        nodata = next((ds.nodatavals[i - 1] for i in self.indexes if ds.nodatavals[i - 1] is not None), None)
        georeferenced = ds.crs is not None or not ds.transform.is_identity
        self.info = RasterInfo(
            len(self.indexes),
            ds.height,
            ds.width,
            ds.dtypes[self.indexes[0] - 1],
            ds.crs.to_wkt() if ds.crs else None,
            tuple(ds.transform)[:6] if georeferenced else None,
            spec.nodata if spec.nodata is not None else nodata,
            tuple(ds.descriptions[i - 1] for i in self.indexes),
        )

    def read(self, rows: Span, cols: Span) -> np.ndarray:
        return self.dataset.read(self.indexes, window=_window(rows, cols))

    def masked(self, rows: Span, cols: Span) -> np.ndarray | None:
        if not self.mask_indexes:
            return None
        return (self.dataset.read_masks(self.mask_indexes, window=_window(rows, cols)) == 0).any(axis=0)


def _window(rows: Span, cols: Span) -> Any:
    from rasterio.windows import Window

    return Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])


class NetCDFReader:
    """NetCDF: one band per data variable, dims ``(y, x)`` or ``(time, y, x)`` (time index 0).
    Default bands: every data variable with the first one's last two dims. Georeferencing
    comes from regular ``y``/``x`` pixel-centre coordinates and a CF grid mapping (``crs_wkt``
    / ``spatial_ref`` attribute), when present."""

    def __init__(self, spec: SourceSpec):
        import xarray as xr

        try:
            # mask_and_scale=False: the raw stored values (digital numbers, say).
            self.dataset = xr.open_dataset(spec.path, engine="netcdf4", mask_and_scale=False, decode_times=False)
        except Exception as e:
            raise TilingError(f"cannot read {spec.path} as NetCDF ({type(e).__name__}: {e})") from None
        rasters = [n for n, v in self.dataset.data_vars.items() if v.ndim in (2, 3)]
        if spec.bands is None:
            names = (
                [n for n in rasters if self.dataset[n].dims[-2:] == self.dataset[rasters[0]].dims[-2:]]
                if rasters
                else []
            )
        else:
            names = [str(b) for b in spec.bands]
        missing = [n for n in names if n not in self.dataset.data_vars]
        if missing or not names:
            raise TilingError(
                f"{spec.path} lacks variable(s) {', '.join(missing) or '(none with dims y, x)'}; it has "
                f"{', '.join(map(str, self.dataset.data_vars)) or 'none'}"
            )
        self.variables = [self.dataset[n] for n in names]
        if len({v.shape[-2:] for v in self.variables}) != 1 or any(v.ndim not in (2, 3) for v in self.variables):
            raise TilingError(
                f"{spec.path}: bands {', '.join(names)} must share dims (y, x) or (time, y, x); "
                f"shapes {sorted({v.shape for v in self.variables})}"
            )
        height, width = self.variables[0].shape[-2:]
        attrs = self.variables[0].attrs
        nodata = attrs.get("_FillValue", attrs.get("missing_value"))
        self.info = RasterInfo(
            len(names),
            height,
            width,
            str(self.variables[0].dtype),
            self._crs(),
            self._transform(),
            spec.nodata if spec.nodata is not None else (None if nodata is None else float(nodata)),
            tuple(names),
        )

    def _crs(self) -> str | None:
        mapping = self.variables[0].attrs.get("grid_mapping")
        candidates = (
            [self.dataset[mapping]] if mapping in self.dataset.variables else list(self.dataset.variables.values())
        )
        for variable in candidates:
            for key in ("crs_wkt", "spatial_ref"):
                if key in variable.attrs:
                    return str(variable.attrs[key])
        return None

    def _transform(self) -> tuple[float, ...] | None:
        dims = self.variables[0].dims[-2:]
        if dims[0] not in self.dataset.coords or dims[1] not in self.dataset.coords:
            return None
        y, x = (np.asarray(self.dataset[d].values, dtype=np.float64) for d in dims)
        return transform_from_centres(y, x)

    def read(self, rows: Span, cols: Span) -> np.ndarray:
        def window(v: Any) -> np.ndarray:
            return (v[0] if v.ndim == 3 else v)[rows[0] : rows[1], cols[0] : cols[1]].values

        return np.stack([window(v) for v in self.variables])

    def masked(self, rows: Span, cols: Span) -> np.ndarray | None:
        return None  # invalid pixels are nodata or NaN only


def transform_from_centres(y: np.ndarray, x: np.ndarray) -> tuple[float, ...] | None:
    """The affine transform of regular pixel-centre coordinates, or None when irregular."""
    if (
        len(y) < 2
        or len(x) < 2
        or np.ptp(np.diff(y)) > 1e-6 * abs(y[1] - y[0])
        or np.ptp(np.diff(x)) > 1e-6 * abs(x[1] - x[0])
    ):
        return None
    dy, dx = y[1] - y[0], x[1] - x[0]
    return (float(dx), 0.0, float(x[0] - dx / 2), 0.0, float(dy), float(y[0] - dy / 2))


class ArrayReader:
    """A ``(band, y, x)`` array: in memory, ``.npy`` (memory-mapped) or Zarr. A Zarr group must
    hold one 3-D array (other arrays: coordinates); its georeferencing is read from a CF grid
    mapping (as :func:`create_zarr_dataset` writes it) or from ``crs`` / ``transform`` /
    ``nodata`` attributes of the array."""

    def __init__(self, spec: SourceSpec | None = None, array: np.ndarray | None = None):
        attrs: dict[str, Any] = {}
        crs = transform = nodata = None
        path = "the array" if spec is None else spec.path
        if array is not None:
            self.array = array
        else:
            try:
                if spec.path.rstrip("/").endswith(ZARR_SUFFIX):
                    self.array, crs, transform, nodata = _open_zarr_input(spec.path)
                    attrs = dict(self.array.attrs)
                else:
                    self.array = np.load(spec.path, mmap_mode="r", allow_pickle=False)
            except TilingError:
                raise
            except Exception as e:
                raise TilingError(f"cannot read {spec.path} ({type(e).__name__}: {e})") from None
        if self.array.ndim != 3:
            raise TilingError(f"{path}: expected an array (band, y, x), got shape {self.array.shape}")
        self.indexes = _band_indexes(path, None if spec is None else spec.bands, self.array.shape[0])
        crs = crs or attrs.get("crs")
        transform = transform or attrs.get("transform")
        nodata = nodata if nodata is not None else attrs.get("nodata")
        if spec is not None and spec.nodata is not None:
            nodata = spec.nodata
        self.info = RasterInfo(
            len(self.indexes),
            int(self.array.shape[1]),
            int(self.array.shape[2]),
            str(self.array.dtype),
            crs,
            None if transform is None else tuple(transform),
            None if nodata is None else float(nodata),
        )

    def read(self, rows: Span, cols: Span) -> np.ndarray:
        if self.indexes == list(range(self.array.shape[0])):
            return np.asarray(self.array[:, rows[0] : rows[1], cols[0] : cols[1]])
        return np.stack([np.asarray(self.array[i, rows[0] : rows[1], cols[0] : cols[1]]) for i in self.indexes])

    def masked(self, rows: Span, cols: Span) -> np.ndarray | None:
        return None  # invalid pixels are nodata or NaN only


def _open_zarr_input(path: str) -> tuple[Any, str | None, tuple | None, float | None]:
    """``(array, crs, transform, nodata)`` of a Zarr array, or of the one 3-D array of a group."""
    import zarr

    node = zarr.open(path, mode="r")
    if not isinstance(node, zarr.Group):
        return node, None, None, None
    group = node
    arrays = [(name, a) for name, a in group.arrays() if a.ndim == 3]
    if len(arrays) != 1:
        raise TilingError(f"{path}: a Zarr group must hold exactly one 3-D (band, y, x) array, found {len(arrays)}")
    _, array = arrays[0]
    attrs = dict(array.attrs)
    crs = transform = nodata = None
    mapping = attrs.get("grid_mapping")
    if mapping is not None and mapping in group:
        mapping_attrs = dict(group[mapping].attrs)
        crs = mapping_attrs.get("crs_wkt") or mapping_attrs.get("spatial_ref")
        if "GeoTransform" in mapping_attrs:
            c, a, b, f, d, e = (float(v) for v in str(mapping_attrs["GeoTransform"]).split())
            transform = (a, b, c, d, e, f)
    dims = attrs.get("_ARRAY_DIMENSIONS") or getattr(array.metadata, "dimension_names", None)
    if transform is None and dims and dims[1] in group and dims[2] in group:
        transform = transform_from_centres(
            np.asarray(group[dims[1]][...], np.float64), np.asarray(group[dims[2]][...], np.float64)
        )
    if dims:  # an xarray (CF) layout: the fill value is the nodata value
        fill = array.fill_value
        nodata = None if fill is None else float(fill)
    return array, crs, transform, nodata


def open_reader(source: SourceSpec | np.ndarray) -> Reader:
    """The reader for an array or for ``source.path``'s format (by its suffix; GDAL for any
    other)."""
    if isinstance(source, np.ndarray):
        return ArrayReader(array=source)
    path = Path(source.path)
    if not path.exists():
        raise TilingError(f"input {source.path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".nc":
        return NetCDFReader(source)
    if suffix in (ZARR_SUFFIX, ".npy"):
        return ArrayReader(source)
    return GeoTiffReader(source)


def scaled_transform(transform: Sequence[float] | None, scale: int) -> tuple[float, ...] | None:
    """The affine transform of an output ``scale`` times finer: same origin, pixel size / scale."""
    if transform is None:
        return None
    a, b, c, d, e, f = transform
    return (a / scale, b / scale, c, d / scale, e / scale, f)


# ----------------------------------------------------------------------------------------------
# Output: the Zarr dataset, the COG


def create_zarr_dataset(
    path: Path,
    shape: tuple[int, int, int],
    chunk: int,
    dtype: Any,
    nodata: float,
    crs: str | None,
    transform: Sequence[float] | None,
    attrs: dict,
    descriptions: Sequence[str] | None = None,
) -> None:
    """An empty output dataset at ``path`` (layout in the module docstring): ``data`` of
    ``shape`` (band, y, x), chunked ``(1, chunk, chunk)``, filled with ``nodata``; band
    ``descriptions`` as a coordinate ``description`` along ``band``. One band per chunk: GDAL
    reads a band's block without decoding the other bands (3x faster COG writing for 3 bands
    than chunks of all bands)."""
    import dask.array
    import xarray as xr

    bands, height, width = shape
    data_attrs: dict[str, Any] = {}
    coords: dict[str, Any] = {"band": np.arange(1, bands + 1)}
    if descriptions is not None:
        coords[DESCRIPTION] = ("band", np.array([str(d) for d in descriptions]))
    if transform is not None:
        a, b, c, d, e, f = transform
        if b == 0 and d == 0:  # a north-up grid: 1-D pixel-centre coordinates
            coords["y"] = ("y", f + e * (np.arange(height) + 0.5), {"units": "m"} if crs else {})
            coords["x"] = ("x", c + a * (np.arange(width) + 0.5), {"units": "m"} if crs else {})
    if crs is not None or transform is not None:
        mapping: dict[str, Any] = {}
        if crs is not None:
            mapping.update(crs_wkt=crs, spatial_ref=crs)
        if transform is not None:
            a, b, c, d, e, f = transform
            mapping["GeoTransform"] = " ".join(repr(float(v)) for v in (c, a, b, f, d, e))
        coords[GRID_MAPPING] = ((), 0, mapping)
        data_attrs["grid_mapping"] = GRID_MAPPING
    empty = dask.array.empty(shape, dtype=dtype, chunks=(1, chunk, chunk))
    dataset = xr.Dataset(
        {DATA_VARIABLE: (("band", "y", "x"), empty, data_attrs)},
        coords=coords,
        attrs={k: _attr_value(v) for k, v in attrs.items()},
    )
    # Blosc LZ4 with bit shuffling: the store of a float32 output is 6-7 % smaller than with
    # byte shuffling (zarr's default) and reads faster; GDAL's Zarr driver reads it.
    from numcodecs import Blosc

    compressor = Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE)
    encoding = {DATA_VARIABLE: {"chunks": (1, chunk, chunk), "_FillValue": nodata, "compressors": [compressor]}}
    dataset.to_zarr(str(path), mode="w", compute=False, encoding=encoding, zarr_format=2, consolidated=True)


def _attr_value(value: Any) -> Any:
    """An attribute value Zarr's JSON takes: numbers, strings, lists; anything else as str."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_attr_value(v) for v in value]
    return str(value)


def open_zarr_data(path: Path | str) -> Any:
    """The ``data`` array of an output dataset, writable (tiles write their chunks)."""
    import zarr

    return zarr.open_group(str(path), mode="r+")[DATA_VARIABLE]


def store_dtype(dtype: Any, destination: Path) -> np.dtype:
    """The dtype of the staging store for an output of ``dtype`` at ``destination``: ``dtype``,
    but float32 for a float16 GeoTIFF, since GDAL's Zarr driver (3.12) refuses float16 arrays
    with a NaN fill value; the COG then stores half floats (``NBITS=16``)."""
    dtype = np.dtype(dtype)
    if dtype == np.float16 and destination.suffix.lower() in GEOTIFF_SUFFIXES:
        return np.dtype(np.float32)
    return dtype


def needs_bigtiff(image_bytes: int) -> bool:
    """Whether a COG of an uncompressed image of ``image_bytes`` could pass the classic TIFF
    limit (with overviews and a 2 % allowance for deflate and indexes)."""
    return image_bytes * 4 / 3 * 1.02 > TIFF_LIMIT


def write_cog(store: Path, destination: Path, *, resampling: str, tags: dict | None = None, dtype: Any = None) -> None:
    """Write the dataset at ``store`` as a Cloud-Optimized GeoTIFF at ``destination``: GDAL's
    COG driver reads the store through a VRT (which sets georeferencing, nodata and tags) and
    writes internal tiles of 512, overviews (``resampling``, e.g. "average" or "nearest") and
    deflate with a predictor, BigTIFF by :func:`needs_bigtiff`. ``dtype`` float16 writes half
    floats from a float32 store (:func:`store_dtype`). GDAL streams blocks: memory stays within
    its block cache; every block is written once."""
    import rasterio
    import rasterio.shutil
    import zarr

    group = zarr.open_group(str(store), mode="r")
    data = group[DATA_VARIABLE]
    bands, height, width = data.shape
    mapping = dict(group[GRID_MAPPING].attrs) if GRID_MAPPING in group else {}
    descriptions = [str(d) for d in group[DESCRIPTION][...]] if DESCRIPTION in group else [None] * bands
    vrt = destination.with_name(destination.name + ".vrt")
    vrt.write_text(
        _vrt_xml(store, data.dtype, data.fill_value, (bands, height, width), mapping, tags or {}, descriptions)
    )
    options = {
        "compress": "DEFLATE",
        "predictor": "YES",
        "blocksize": COG_BLOCK,
        "overview_resampling": resampling.upper(),
        "bigtiff": "YES" if needs_bigtiff(data.nbytes) else "NO",
    }
    if dtype is not None and np.dtype(dtype) == np.float16:
        options["nbits"] = 16  # half floats (readable by GDAL before 3.11 too, as Float32)
    try:
        with (
            warnings.catch_warnings(),
            rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES, GDAL_NUM_THREADS=os.cpu_count() or 1),
        ):
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            rasterio.shutil.copy(str(vrt), str(destination), driver="COG", **options)
    finally:
        vrt.unlink(missing_ok=True)


_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
}


def _vrt_xml(
    store: Path,
    dtype: Any,
    nodata: Any,
    shape: tuple[int, int, int],
    mapping: dict,
    tags: dict,
    descriptions: Sequence[str | None],
) -> str:
    """A GDAL VRT of the store's ``data`` bands with georeferencing, nodata, metadata and band
    descriptions."""
    dtype = np.dtype(dtype).name
    if dtype not in _GDAL_TYPES:
        raise TilingError(f"a GeoTIFF cannot hold {dtype} data; pass dtype= (e.g. float32, uint8)")
    bands, height, width = shape
    source = escape(f'ZARR:"{store.resolve()}":/{DATA_VARIABLE}')
    nodata_text = "nan" if nodata is None or np.isnan(float(nodata)) else repr(float(nodata))
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    if "crs_wkt" in mapping:
        lines.append(f"  <SRS>{escape(mapping['crs_wkt'])}</SRS>")
    if "GeoTransform" in mapping:
        lines.append(f"  <GeoTransform>{', '.join(mapping['GeoTransform'].split())}</GeoTransform>")
    if tags:
        lines.append("  <Metadata>")
        lines += [f"    <MDI key={quoteattr(str(k))}>{escape(str(v))}</MDI>" for k, v in tags.items()]
        lines.append("  </Metadata>")
    for band, description in zip(range(1, bands + 1), descriptions, strict=True):
        lines.append(f'  <VRTRasterBand dataType="{_GDAL_TYPES[dtype]}" band="{band}">')
        if description is not None:
            lines.append(f"    <Description>{escape(description)}</Description>")
        lines += [
            f"    <NoDataValue>{nodata_text}</NoDataValue>",
            "    <SimpleSource>",
            f'      <SourceFilename relativeToVRT="0">{source}</SourceFilename>',
            f"      <SourceBand>{band}</SourceBand>",
            "    </SimpleSource>",
            "  </VRTRasterBand>",
        ]
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def publish(source: Path, output: Path) -> None:
    """Move the finished ``source`` to ``output``, replacing an old output only now."""
    if output.exists():
        old = output.with_name(output.name + ".old")
        if old.exists():
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        os.replace(output, old)
        os.replace(source, output)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(source, output)


def read_raster(path: Path | str) -> np.ndarray:
    """A (small) raster, whole: (band, y, x), as stored."""
    reader = open_reader(SourceSpec(str(Path(path).resolve())))
    return reader.read((0, reader.info.height), (0, reader.info.width))
