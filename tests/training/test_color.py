import numpy as np
import pytest
import torch

from kornia.color import rgb_to_ycbcr

from training.color import ENCODINGS, colourfulness, get_encoding, is_grayscale, luma, with_luma


def rgb_batch(seed=0):
    torch.manual_seed(seed)
    x = torch.rand(4, 3, 16, 16)
    x[0, :, :4, :4] = 0  # black pixels (ratio's division by zero)
    x[1] = x[1, :1]  # a gray image
    x[2, :, 0, 0] = 1  # white
    return x


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_round_trip_to_float_precision(name):
    enc = get_encoding(name)
    x = rgb_batch()
    gray, target = enc.encode(x)
    assert gray.shape == (4, 1, 16, 16) and target.shape == (4, enc.target_channels, 16, 16)
    assert torch.allclose(enc.decode(gray, target), x, atol=1e-5)


@pytest.mark.parametrize("name", sorted(set(ENCODINGS) - {"ycbcr_centred"}))
def test_inputs_and_targets_lie_in_the_sigmoid_range(name):
    gray, target = get_encoding(name).encode(rgb_batch())
    for t in (gray, target):
        assert t.min() >= -1e-6 and t.max() <= 1 + 1e-6


def test_the_centred_ycbcr_variant_needs_negative_outputs():
    """The range error: a sigmoid cannot produce the negative chroma of blue or green pixels."""
    blue = torch.zeros(1, 3, 2, 2)
    blue[:, 2] = 1
    _, target = get_encoding("ycbcr_centred").encode(blue)
    assert target[0, 0].min() > 0.4 and target[0, 1].max() < -0.05  # Cb = +0.5, Cr negative
    _, target = get_encoding("ycbcr").encode(blue)
    assert 0 <= target.min() and target.max() <= 1


def test_ycbcr_matches_pillows_full_range_bt601():
    from PIL import Image

    rgb = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    pil = np.asarray(Image.fromarray(rgb).convert("YCbCr")).astype(np.float32) / 255
    y, cbcr = get_encoding("ycbcr").encode(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)
    ours = torch.cat([y, cbcr], 1)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - pil).max() < 1.5 / 255  # Pillow rounds to integers
    assert torch.allclose(y, luma(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255), atol=1e-5)


def test_lab_matches_scikit_image():
    from skimage.color import rgb2lab

    x = rgb_batch()
    gray, ab = get_encoding("lab").encode(x)
    ref = rgb2lab(x.permute(0, 2, 3, 1).numpy().astype(np.float64))
    assert np.abs(gray[:, 0].numpy() * 100 - ref[..., 0]).max() < 1e-2
    assert np.abs(ab.permute(0, 2, 3, 1).numpy() * 256 - 128 - ref[..., 1:]).max() < 1e-2


def test_grayscale_detection():
    imgs = np.random.default_rng(0).integers(0, 256, (3, 3, 8, 8), dtype=np.uint8)
    imgs[1] = imgs[1, :1]
    imgs[2] = imgs[2, :1]
    imgs[2, 0, 0, 0] = min(255, int(imgs[2, 0, 0, 0]) + 2)  # within 2/255: still gray
    assert is_grayscale(imgs).tolist() == [False, True, True]
    imgs[2, 0, 0, 0] = (int(imgs[2, 1, 0, 0]) + 3) % 256
    assert is_grayscale(imgs).tolist() == [False, True, False]


def test_colourfulness():
    gray = torch.full((1, 3, 8, 8), 0.5)
    assert colourfulness(gray).item() == pytest.approx(0, abs=1e-4)
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1
    # Uniform pure red: no spread, mean rg = 255, yb = 127.5 -> 0.3 * sqrt(255^2 + 127.5^2).
    assert colourfulness(red).item() == pytest.approx(0.3 * (255**2 + 127.5**2) ** 0.5, rel=1e-4)
    assert colourfulness(rgb_batch())[0] > colourfulness(rgb_batch())[1]


def test_unknown_encoding():
    with pytest.raises(ValueError, match="encoding must be one of"):
        get_encoding("hsv")


def test_with_luma_sets_luma_and_keeps_chroma():
    rgb = torch.rand(2, 3, 8, 8) * 0.6 + 0.2
    y = luma(rgb) + torch.empty(2, 1, 8, 8).uniform_(-0.1, 0.1)
    out = with_luma(rgb, y)
    assert torch.allclose(luma(out), y, atol=1e-6)
    assert torch.allclose(rgb_to_ycbcr(out)[:, 1:], rgb_to_ycbcr(rgb)[:, 1:], atol=1e-6)
    assert with_luma(torch.ones(1, 3, 2, 2), torch.full((1, 1, 2, 2), 2.0)).max() == 1  # clamped
