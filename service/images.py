"""Bytes in, float32 arrays out, and back: decoding with every check done before pixels are decoded.

Accepted: anything Pillow reads (PNG, JPEG, WebP, GIF, BMP, TIFF, ...). Modes are normalised to RGB:
palette and 1-bit images are expanded, transparency is composited on white (what a viewer shows),
16-bit and 32-bit integer images are scaled to 8 bits, CMYK and YCbCr are converted. An animated image
gives its first frame. The pixel cap is checked on the header's dimensions, before any pixel is decoded,
so a decompression bomb (a small file claiming a huge image) costs nothing.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import ServiceError

OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601, the colorizer's input

# Pillow's own bomb check would raise on big images before ours can answer clearly; ours is stricter.
Image.MAX_IMAGE_PIXELS = None


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header and check the size; no pixel data is decoded yet."""
    if not data:
        raise ServiceError(400, "empty_body", "the request has no image data")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ServiceError(415, "unsupported_image", "not an image in a supported format (PNG, JPEG, WebP, GIF, BMP, TIFF)") from None
    except Exception as e:  # corrupt headers raise many kinds of errors
        raise ServiceError(400, "invalid_image", f"the image header cannot be read: {e}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ServiceError(400, "invalid_image", f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ServiceError(413, "image_too_large", f"the image is {width}x{height} = {width * height:,} pixels, "
                           f"more than the limit of {max_pixels:,} (CAE_MAX_PIXELS)")
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / top * 255 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        raise ServiceError(415, "unsupported_mode", "floating-point images are not supported; send 8- or 16-bit images")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Image bytes -> uint8 (H, W, 3) RGB."""
    image = open_image(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.seek(0)  # the first frame of an animation
            image.load()
            rgb = _to_rgb(image)
            return np.asarray(rgb, dtype=np.uint8)
    except ServiceError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ServiceError(400, "invalid_image", f"the image data is truncated or corrupt: {e}") from None


def to_model_input(rgb: np.ndarray, size: str, stride: int) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8 (H, W, 3) -> float32 (3, H', W') in [0, 1] and the (H, W) to crop the output back to.

    size "32": resize to 32x32 (the training size; the output is 32x32). size "native": keep the
    image's size, padded (edge pixels repeated) up to a multiple of the stride and cropped back after.
    """
    if size == "32":
        if rgb.shape[:2] != (32, 32):
            rgb = np.asarray(Image.fromarray(rgb).resize((32, 32), Image.Resampling.BOX if min(rgb.shape[:2]) >= 32 else Image.Resampling.BICUBIC))
        out_hw = (32, 32)
    else:
        out_hw = rgb.shape[:2]
        pad_h, pad_w = (-out_hw[0]) % stride, (-out_hw[1]) % stride
        if pad_h or pad_w:
            rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255, out_hw


def luma(chw: np.ndarray) -> np.ndarray:
    """float32 (3, H, W) RGB -> (1, H, W) luma Y."""
    return np.tensordot(LUMA, chw, axes=1)[None].astype(np.float32)


def encode_image(chw: np.ndarray, out_hw: tuple[int, int], fmt: str) -> bytes:
    """float32 (3, H, W) in [0, 1] -> image bytes in `fmt`, cropped to out_hw."""
    h, w = out_hw
    arr = (np.clip(chw[:, :h, :w], 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    buf = io.BytesIO()
    pil_format, _ = OUTPUT_FORMATS[fmt]
    Image.fromarray(arr, "RGB").save(buf, pil_format, **({"compress_level": 1} if fmt == "png" else {"quality": 90}))
    return buf.getvalue()
