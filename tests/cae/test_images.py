"""Training and serving decode an image file to the same RGB array, whatever its mode."""

import io

import numpy as np
import pytest
from PIL import Image

from cae.images import LUMA, luma
from training.data import load_images

pytest.importorskip("fastapi")  # the service's decoder raises the service's HTTP errors
from service.images import decode_image  # noqa: E402


def _modes(rng) -> dict[str, tuple[Image.Image, str]]:
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    palette = Image.fromarray(rgb).quantize(16)
    palette_t = palette.copy()
    palette_t.info["transparency"] = 3
    sixteen = Image.fromarray(rng.integers(0, 65536, (32, 32), dtype=np.uint16).astype(np.uint16))
    return {
        "RGB": (Image.fromarray(rgb), "PNG"),
        "RGBA": (Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG"),
        "LA": (Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA"), "PNG"),
        "L": (Image.fromarray(rgb[..., 1]), "PNG"),
        "1": (Image.fromarray(rgb[..., 2] > 127), "PNG"),
        "P": (palette, "PNG"),
        "P with transparency": (palette_t, "PNG"),
        "I;16": (sixteen, "PNG"),
        "I (32-bit)": (Image.fromarray(rng.integers(0, 255, (32, 32)).astype(np.int32), "I"), "TIFF"),
        "CMYK": (Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "YCbCr JPEG": (Image.fromarray(rgb), "JPEG"),
        "RGB WebP": (Image.fromarray(rgb), "WEBP"),
    }


def test_training_and_serving_decode_every_mode_alike(tmp_path):
    cases = _modes(np.random.default_rng(0))
    folder = tmp_path / "images"
    folder.mkdir()
    blobs = {}
    for i, (mode, (image, fmt)) in enumerate(cases.items()):
        buf = io.BytesIO()
        image.save(buf, fmt, **({"transparency": 3} if mode == "P with transparency" else {}))
        blobs[mode] = buf.getvalue()
        (folder / f"{i:02d}.{fmt.lower()}").write_bytes(blobs[mode])
    trained = load_images(str(folder)).images  # (N, 3, 32, 32), files in name order
    for i, mode in enumerate(cases):
        served = decode_image(blobs[mode], max_pixels=1 << 20)
        np.testing.assert_array_equal(trained[i].transpose(1, 2, 0), served, err_msg=mode)


def test_the_issues_two_examples():
    # A transparent red pixel is white (what a viewer shows), a 16-bit 40000 is 156 of 255.
    buf = io.BytesIO()
    Image.new("RGBA", (2, 2), (200, 0, 0, 0)).save(buf, "PNG")
    assert decode_image(buf.getvalue(), 100)[0, 0].tolist() == [255, 255, 255]
    buf = io.BytesIO()
    Image.fromarray(np.full((2, 2), 40000, dtype=np.uint16)).save(buf, "PNG")
    assert decode_image(buf.getvalue(), 100)[0, 0].tolist() == [156, 156, 156]


def test_luma_is_bt601_on_either_layout():
    rgb = np.random.default_rng(1).random((3, 4, 5), dtype=np.float32)
    expected = LUMA[0] * rgb[0] + LUMA[1] * rgb[1] + LUMA[2] * rgb[2]
    np.testing.assert_allclose(luma(rgb)[0], expected, rtol=1e-6)
    np.testing.assert_allclose(luma(rgb.transpose(1, 2, 0), axis=-1)[..., 0], expected, rtol=1e-6)
    assert LUMA == (0.299, 0.587, 0.114)
