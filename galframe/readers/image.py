"""PNG and JPEG images (``reader.image``): one object per file, or large images cut into tiles / cutouts.

8-bit (or 16-bit) display images are not flux: channels are mapped to bands (``rgb_bands``, by default
R, G, B = z, r, g as in Legacy Surveys colour images) and the display stretch is undone into a
pseudo-flux in nanomaggies (see :func:`galframe.readers.units.rgb_to_flux` and docs/data.md).
A grey image is one band (``rgb_bands: [r]``).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence, Union

from galframe.readers.base import Reject, Shard, Stamp, StampError, chunked, file_id, file_stat, fingerprint, list_files
from galframe.readers.tiles import ArraySource, PixelSource, TiledReader
from galframe.readers.units import read_image_file, rgb_to_flux

PATTERNS = ("*.png", "*.jpg", "*.jpeg", "*.PNG", "*.JPG", "*.JPEG")


class RGBConversion:
    """The options that turn display pixels into pseudo-flux (shared by the image, Galaxy10 and GZ readers)."""

    def __init__(self, rgb_bands: Sequence[str] = ("z", "r", "g"), stretch: str = "asinh", q: float = 10.0,
                 white: Any = None, black: float = 0.0) -> None:
        self.rgb_bands = tuple(str(b) for b in rgb_bands)
        self.stretch, self.q, self.white, self.black = stretch, float(q), white, float(black)

    def __call__(self, pixels: Any) -> Any:
        bands = self.rgb_bands
        if getattr(pixels, "ndim", 0) == 2 and len(bands) != 1:
            raise StampError(f"grey image, but data.rgb_bands names {len(bands)} bands {list(bands)}")
        return rgb_to_flux(pixels, bands, self.stretch, self.q, self.white, self.black)


def read_image_stamp(path: str, conversion: RGBConversion, object_id: Optional[str] = None) -> Stamp:
    flux = conversion(read_image_file(path))
    return Stamp(id=object_id or file_id(path), flux=flux, bands=conversion.rgb_bands,
                 meta={"ra": float("nan"), "dec": float("nan"), "source": str(path)})


class ImageReader(TiledReader):
    """``path``: a directory, glob, file or list of PNG/JPEG files.  With ``tile_size`` (or ``centres``)
    each image is cut into overlapping tiles (or cutouts at the centres' x, y); else one object per file."""

    def __init__(
        self,
        path: Any = None,
        pattern: Union[str, Sequence[str]] = PATTERNS,
        rgb_bands: Sequence[str] = ("z", "r", "g"),
        stretch: str = "asinh",
        q: float = 10.0,
        white: Any = None,
        black: float = 0.0,
        tile_size: Optional[int] = None,
        overlap: int = 16,
        centres: Optional[str] = None,
        stamp_size: Optional[int] = None,
        pixel_scale: Optional[float] = None,
        shard_size: int = 256,
    ) -> None:
        super().__init__(tile_size=tile_size, overlap=overlap, centres=centres, stamp_size=stamp_size, shard_size=shard_size)
        self.path = path
        self.patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        self.conversion = RGBConversion(rgb_bands, stretch, q, white, black)
        self.bands = self.conversion.rgb_bands
        self.pixel_scale = pixel_scale
        self.tiled = tile_size is not None or centres is not None
        self._files: Optional[list[str]] = None

    def describe(self) -> str:
        return f"images at {self.path}"

    def source_names(self) -> list[str]:
        if self._files is None:
            self._files = list_files(self.path, self.patterns)
        return self._files

    def open_source(self, name: str) -> PixelSource:
        return ArraySource(name, self.conversion(read_image_file(name)), self.bands)

    def tile_grid(self, source: str) -> Any:
        return super().tile_grid(source) if self.tiled else None

    def shards(self) -> list[Shard]:
        if self.tiled:
            return super().shards()
        files = self.source_names()
        return [
            Shard(key=f"{k:06d}", items=tuple(chunk), n=len(chunk), fingerprint=fingerprint(file_stat(f) for f in chunk))
            for k, chunk in chunked(files, self.shard_size)
        ]

    def read(self, shard: Shard) -> Iterator[Union[Stamp, Reject]]:
        if self.tiled:
            yield from super().read(shard)
            return
        for path in shard.items:
            try:
                yield read_image_stamp(path, self.conversion)
            except StampError as exc:
                yield Reject(source=str(path), reason=str(exc), id=file_id(path))
