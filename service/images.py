"""Bytes in, float32 arrays out, and back: decoding with every check done before pixels are decoded.

Accepted: anything Pillow reads (PNG, JPEG, WebP, GIF, BMP, TIFF, ...), normalised to RGB by
cae.images exactly as training decodes its images. The pixel cap is checked on the header's dimensions, before any pixel is decoded,
so a decompression bomb (a small file claiming a huge image) costs nothing.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from cae.images import UnsupportedImageMode, luma, orientation, upright_rgb

from service.errors import ServiceError

OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}

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


def load_rgb(image: Image.Image) -> Image.Image:
    """An opened image (open_image) decoded to RGB, turned upright by its EXIF orientation (as viewers
    show a phone photo). Pillow releases the GIL while decoding: this runs in a thread for large images."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return upright_rgb(image)
    except UnsupportedImageMode as e:
        raise ServiceError(415, "unsupported_mode", str(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ServiceError(400, "invalid_image", f"the image data is truncated or corrupt: {e}") from None


def image_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) after the EXIF orientation is applied."""
    width, height = image.size
    return (width, height) if orientation(image) in (5, 6, 7, 8) else (height, width)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Image bytes -> uint8 (H, W, 3) RGB, upright."""
    return np.asarray(load_rgb(open_image(data, max_pixels)), dtype=np.uint8)


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


def to_uint8(chw: np.ndarray, out_hw: tuple[int, int]) -> Image.Image:
    """float32 (3, H, W) in [0, 1] -> an RGB image cropped to out_hw (row by row: no full-size float copy)."""
    h, w = out_hw
    arr = np.empty((h, w, 3), dtype=np.uint8)
    for y in range(0, h, 256):
        block = chw[:, y:min(h, y + 256), :w]
        arr[y:y + block.shape[1]] = (np.clip(block, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    return Image.fromarray(arr, "RGB")


def save_image(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    pil_format, _ = OUTPUT_FORMATS[fmt]
    image.save(buf, pil_format, **({"compress_level": 1} if fmt == "png" else {"quality": 90}))
    return buf.getvalue()


def encode_image(chw: np.ndarray, out_hw: tuple[int, int], fmt: str) -> bytes:
    """float32 (3, H, W) in [0, 1] -> image bytes in `fmt`, cropped to out_hw."""
    return save_image(to_uint8(chw, out_hw), fmt)


# -- /colorize on large images: colour predicted at a working resolution, laid under the full-size luma ----

# Images up to this many pixels are colorized at full resolution (at most 2x the 32x32 training size per side).
FULL_RESOLUTION_PIXELS = 64 * 64


def colorize_work_size(height: int, width: int, chroma_scale: float, max_work_pixels: int) -> tuple[int, int] | None:
    """The (h, w) the colorizer runs at for an image, or None for full resolution.

    Colour is low-frequency: Zhang et al. (2016) predict it at 1/4 of each side; the default here is 1/5, which
    keeps a 0.25-megapixel photo under 1 s per megapixel on a 2-core CPU. Images larger than 64x64 are
    reduced by up to `chroma_scale` per side (never below 64x64 worth of pixels), and further where the result
    would exceed `max_work_pixels`, which bounds /colorize's cost whatever the photo's size."""
    pixels = height * width
    scale = min(chroma_scale, max(1.0, (pixels / FULL_RESOLUTION_PIXELS) ** 0.5))
    scale = max(scale, (pixels / max_work_pixels) ** 0.5)
    if scale <= 1.0:
        return None
    return max(1, round(height / scale)), max(1, round(width / scale))


def reduced_luma(rgb: Image.Image, work_hw: tuple[int, int], stride: int) -> np.ndarray:
    """RGB image -> float32 (1, h, w) luma at the working size, padded (edge) to the model's stride."""
    h, w = work_hw
    small = np.asarray(rgb.resize((w, h), Image.Resampling.BOX), dtype=np.float32) / 255  # (h, w, 3): area average
    y = luma(small, axis=-1).transpose(2, 0, 1)
    pad_h, pad_w = (-h) % stride, (-w) % stride
    return np.pad(y, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge") if pad_h or pad_w else np.ascontiguousarray(y)


def lay_chroma_under_luma(rgb: Image.Image, colour: np.ndarray, work_hw: tuple[int, int]) -> Image.Image:
    """The full-size image's own luma with the chroma (Cb, Cr, BT.601) of the colorized working-size image,
    upsampled bicubically. All in Pillow's uint8 planes: about 10 bytes per pixel at full size."""
    cb, cr = to_uint8(colour, work_hw).convert("YCbCr").split()[1:]
    size = rgb.size
    return Image.merge("YCbCr", (rgb.convert("L"), cb.resize(size, Image.Resampling.BICUBIC),
                                 cr.resize(size, Image.Resampling.BICUBIC))).convert("RGB")
