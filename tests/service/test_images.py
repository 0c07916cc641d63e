import io

import numpy as np
import pytest
from PIL import Image

from service.errors import ServiceError
from service.images import decode_image, encode_image, luma, to_model_input
from tests.service.conftest import png


def save(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_rgba_is_composited_on_white_and_palette_expanded():
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    assert (decode_image(save(Image.fromarray(rgba, "RGBA")), 1 << 20) == 255).all()
    pal = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4), "L").convert("P")
    assert decode_image(save(pal), 1 << 20).shape == (4, 4, 3)


def test_sixteen_bit_images_are_scaled_not_clipped():
    arr = np.full((4, 4), 32768, np.uint16)
    out = decode_image(save(Image.fromarray(arr)), 1 << 20)  # mode I;16
    assert out.shape == (4, 4, 3) and abs(int(out[0, 0, 0]) - 128) <= 1


def test_cmyk_grayscale_and_animated_images():
    assert decode_image(png(mode="CMYK", fmt="JPEG"), 1 << 20).shape == (32, 32, 3)
    assert decode_image(png(mode="L"), 1 << 20).shape == (32, 32, 3)
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    first = decode_image(buf.getvalue(), 1 << 20)
    assert first.shape == (8, 8, 3) and first[0, 0, 0] > 200 and first[0, 0, 2] < 50  # the first (red) frame


@pytest.mark.parametrize("data,status,code", [
    (b"", 400, "empty_body"),
    (b"this is not an image", 415, "unsupported_image"),
    (png()[:60], 400, "invalid_image"),  # truncated inside the pixel data
])
def test_bad_bytes(data, status, code):
    with pytest.raises(ServiceError) as e:
        decode_image(data, 1 << 20)
    assert (e.value.status, e.value.code) == (status, code)


def test_decompression_bomb_is_rejected_from_the_header():
    bomb = save(Image.new("L", (20000, 20000)), optimize=True)  # ~400 MP in a small file
    assert len(bomb) < 2_000_000
    with pytest.raises(ServiceError) as e:
        decode_image(bomb, 4096 * 4096)
    assert e.value.status == 413 and "20000x20000" in e.value.message


def test_native_size_pads_to_the_stride_and_32_resizes():
    rgb = np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    x, hw = to_model_input(rgb, "native", 8)
    assert x.shape == (3, 32, 48) and hw == (30, 45) and x.dtype == np.float32
    assert np.allclose(x[:, :30, :45], rgb.transpose(2, 0, 1) / 255)
    x32, hw32 = to_model_input(rgb, "32", 8)
    assert x32.shape == (3, 32, 32) and hw32 == (32, 32)
    out = Image.open(io.BytesIO(encode_image(x, hw, "png")))
    assert out.size == (45, 30)
    assert np.array_equal(np.asarray(out), rgb)  # a lossless round trip through the padding and PNG


def test_luma_weights():
    x = np.ones((3, 2, 2), np.float32) * np.array([1, 0, 0], np.float32)[:, None, None]
    assert np.allclose(luma(x), 0.299)
