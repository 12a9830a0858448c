"""Turn any uploaded picture into exactly the RGB image the pipeline expects.

The pipeline's own crop can ask for gigabytes on odd shapes (docs/DEPENDENCIES.md, trap 3), and
Gradio hands over some files unconverted, so every image is normalised here:
first frame of animations, EXIF rotation, any mode to RGB (transparency over white),
size and shape checks with a clear message, then resize and centre-crop to the
exact output size.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import ImageSettings
from .errors import InvalidInput

_BACKGROUND = (255, 255, 255)


def normalise_image(source: Image.Image | str | Path | bytes, size: tuple[int, int],
                    settings: ImageSettings) -> Image.Image:
    """Return ``source`` as an RGB image of exactly ``size`` (width, height).

    Raises ``InvalidInput`` with an actionable message for anything that is not a
    readable picture of acceptable size and shape.
    """
    return fit_picture(open_picture(source, settings), size)


def fit_picture(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` scaled to cover ``size`` (width, height) and centre-cropped to it: as little of the
    picture is cut as that shape allows."""
    return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def open_picture(source: Image.Image | str | Path | bytes, settings: ImageSettings) -> Image.Image:
    """``source`` as an upright RGB picture, checked (readable, size and shape within ``settings``)."""
    image = _open(source, settings)
    _check_pixels(image, settings)
    image = _first_frame(image)
    image = _load(image)
    image = ImageOps.exif_transpose(image)
    image = to_rgb(image)
    _check_shape(image, settings)
    return image


def _open(source, settings: ImageSettings) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if source is None:
        raise InvalidInput(key="err_no_image")
    if not isinstance(source, (bytes, str, os.PathLike)):  # a list, a number...: no picture, and no TypeError
        raise InvalidInput(key="err_not_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            data = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
            return Image.open(data)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InvalidInput(key="err_bomb", limit=f"{settings.max_megapixels:g}") from None
    except ValueError as error:
        raise _metadata_refusal(error) or InvalidInput(key="err_not_image") from None
    except (UnidentifiedImageError, SyntaxError):
        raise InvalidInput(key="err_not_image") from None
    except (FileNotFoundError, IsADirectoryError):
        raise InvalidInput(key="err_upload_missing") from None
    except OSError as error:
        raise InvalidInput(key="err_cannot_open", detail=str(error)) from None


def _check_pixels(image: Image.Image, settings: ImageSettings) -> None:
    # Checked on the header, before decoding, so a decompression bomb costs nothing.
    width, height = image.size
    megapixels = width * height / 1e6
    if megapixels > settings.max_megapixels:
        raise InvalidInput(key="err_too_many_pixels", width=width, height=height, megapixels=f"{megapixels:.0f}",
                           limit=f"{settings.max_megapixels:g}")
    if min(width, height) < 1:
        raise InvalidInput(key="err_empty_image")


def _first_frame(image: Image.Image) -> Image.Image:
    if getattr(image, "is_animated", False):
        image.seek(0)
    return image


def _load(image: Image.Image) -> Image.Image:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise _metadata_refusal(error) or InvalidInput(key="err_damaged", detail=str(error)) from None
    return image


def _metadata_refusal(error: Exception) -> InvalidInput | None:
    """The refusal of a PNG whose text or colour profile is over Pillow's limit, else None.

    Pillow refuses a PNG text chunk or ICC profile that unpacks past ``PngImagePlugin.MAX_TEXT_CHUNK``
    (or text past ``MAX_TEXT_MEMORY`` in all) with a plain ValueError naming that limit
    (docs/DEPENDENCIES.md); the pixels may be fine, so the user is told to drop the metadata.
    """
    if isinstance(error, ValueError) and "MAX_TEXT_" in str(error):
        return InvalidInput(key="err_metadata_too_large")
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparent areas become white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if image.mode == "P" and "transparency" in image.info or image.mode in ("PA", "LA", "RGBa", "La"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, _BACKGROUND)
        background.paste(image, mask=image.getchannel("A"))
        return background
    # CMYK (Pillow undoes Adobe's inverted JPEGs itself), L, 1, YCbCr, LAB, HSV.
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    if not np.isfinite(pixels).all():
        pixels = np.nan_to_num(pixels)
    top = pixels.max(initial=0.0)
    if image.mode == "F" and top <= 1.0:
        scale = 255.0
    elif top > 255:
        scale = 255.0 / 65535.0
    else:
        scale = 1.0
    gray = np.clip(pixels * scale, 0, 255).round().astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def _check_shape(image: Image.Image, settings: ImageSettings) -> None:
    width, height = image.size
    if min(width, height) < settings.min_side:
        raise InvalidInput(key="err_too_small", width=width, height=height, min_side=settings.min_side)
    ratio = max(width, height) / min(width, height)
    if ratio > settings.max_aspect_ratio:
        raise InvalidInput(key="err_aspect", width=width, height=height, ratio=f"{ratio:.1f}",
                           limit=f"{settings.max_aspect_ratio:g}")
