"""Image files to RGB arrays, one way for training and serving, and the luma the colorizers see.

Modes are normalised to RGB as a viewer shows them: palette and 1-bit images expanded, transparency
composited on white, 16- and 32-bit integer images scaled to 8 bits, CMYK and YCbCr converted, the EXIF
orientation applied, an animation's first frame taken. Training decodes its image files with `rgb_array`
and the service decodes requests with `upright_rgb`, so a model sees at serving time what it saw when it
learned (tests/cae/test_images.py holds both to the same array for every mode).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

# ITU-R BT.601 luma, full range (JFIF): the colorizers' gray input, in training and serving.
LUMA = (0.299, 0.587, 0.114)
_LUMA32 = np.array(LUMA, dtype=np.float32)

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class UnsupportedImageMode(ValueError):
    """An image mode with no RGB reading (floating-point images)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """A decoded image of any Pillow mode -> mode RGB (see the module docstring for each mode)."""
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        arr = np.asarray(image, dtype=np.float64)
        # 32-bit "I" images holding 8-bit values (some PNG/TIFF writers) stay as they are.
        top = 65535.0 if mode in SIXTEEN_BIT_MODES or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / top * 255 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        raise UnsupportedImageMode("floating-point images are not supported; send 8- or 16-bit images")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def orientation(image: Image.Image) -> int | None:
    """The EXIF orientation tag (1-8), or None; a broken EXIF block is ignored, as viewers do."""
    try:
        return image.getexif().get(0x0112)
    except Exception:
        return None


def upright_rgb(image: Image.Image) -> Image.Image:
    """An opened image decoded to RGB and turned upright by its EXIF orientation (first frame of an
    animation). Decoding errors are Pillow's (OSError, SyntaxError, ValueError, EOFError)."""
    image.seek(0)
    image.load()
    if orientation(image) not in (None, 1):
        image = ImageOps.exif_transpose(image)
    return to_rgb(image)


def rgb_array(image: Image.Image) -> np.ndarray:
    """An opened image -> uint8 (H, W, 3) RGB, upright."""
    return np.asarray(upright_rgb(image), dtype=np.uint8)


def luma(rgb: np.ndarray, axis: int = 0) -> np.ndarray:
    """float RGB with its channels on `axis` -> float32 luma Y with that axis kept (size 1)."""
    return np.expand_dims(np.tensordot(_LUMA32, np.moveaxis(rgb, axis, 0), axes=1), axis).astype(np.float32)
