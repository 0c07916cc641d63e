"""Tiles: the plan covers every position once, and tiled outputs equal untiled ones for the real models."""

from fractions import Fraction

import numpy as np
import pytest

from service.models import load_models, warm_up
from service.settings import SHIPPED_MODELS
from service.tiling import Geometry, measure_halo, plan_tiles, run_tiled


@pytest.mark.parametrize("h, w, align, halo, limit", [(96, 200, 8, 16, 64 * 64), (8, 4096, 8, 24, 40 * 40),
                                                       (37, 53, 1, 3, 100), (64, 64, 4, 8, 1 << 20)])
def test_tiles_cover_every_position_exactly_once_and_stay_near_the_limit(h, w, align, halo, limit):
    tiles = plan_tiles(h, w, Geometry(Fraction(1), align, halo), limit)
    covered = np.zeros((h, w), dtype=int)
    for t in tiles:
        y0, y1, x0, x1 = t.core
        covered[y0:y1, x0:x1] += 1
        assert t.src[0] == max(0, y0 - halo) and t.src[3] == min(w, x1 + halo)
        assert all(v % align == 0 for v in (*t.core, *t.src) if v not in (h, w))
        # A tile exceeds the limit only where one aligned core unit plus its halo is already larger.
        assert t.src_pixels <= max(limit, (align + 2 * halo) ** 2 * 4)
    assert (covered == 1).all()
    assert len(tiles) == 1 or h * w > limit


def test_a_model_with_global_context_is_never_tiled():
    # Every output depends on the mean of the whole input: no finite halo exists.
    halo = measure_halo(lambda x: x - x.mean(), 1, Fraction(1), 1, side=16, max_side=64)
    assert halo is None
    assert len(plan_tiles(500, 500, Geometry(Fraction(1), 1, None), 100)) == 1


def test_measured_halo_covers_a_known_receptive_field():
    # A 7-tap box blur applied twice: receptive field radius 6.
    def blur(x):
        for _ in range(2):
            p = np.pad(x, ((0, 0), (0, 0), (3, 3), (3, 3)))
            x = sum(p[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]] for dy in range(7) for dx in range(7)) / 49
        return x
    halo = measure_halo(blur, 1, Fraction(1), 1, side=32, max_side=64)
    assert 6 <= halo <= 10
    x = np.random.default_rng(0).random((1, 1, 70, 90), dtype=np.float32)
    tiled = run_tiled(blur, x, Geometry(Fraction(1), 1, halo), 30 * 30, 1)
    np.testing.assert_allclose(tiled, blur(x), atol=1e-6)


def test_a_model_that_declares_global_context_is_not_measured_and_never_tiled(model_dir):
    models = load_models(model_dir, "cpu", 1)
    by_role = {m.role: m for m in models.values()}
    colorizer = by_role["colorizer"]
    colorizer.facts = {**colorizer.facts, "global_context": True}
    warm_up(models, runs=1)
    assert colorizer.halo is None and by_role["encoder"].halo is not None
    assert len(plan_tiles(512, 512, colorizer.geometry, 64 * 64)) == 1


@pytest.fixture(scope="module")
def shipped():
    models = load_models(SHIPPED_MODELS, "cpu", 1)
    warm_up(models, runs=1)
    return models


# Input sides per role (in the model's input units): not multiples of the tile size, so tiles have ragged edges.
INPUT_SIDES = {"encoder": (200, 264), "decoder": (30, 41), "colorizer": (136, 180)}


def test_tiled_outputs_equal_untiled_outputs_for_every_shipped_model(shipped):
    for key, model in shipped.items():
        if model.facts.get("global_context"):
            assert model.halo is None, key  # image-wide features: one run, never tiles
            continue
        assert model.halo is not None and model.cost.bytes_per_pixel > 0 and model.cost.seconds_per_pixel > 0, key
        shape = (1, model.input_channels, *INPUT_SIDES[model.role])
        x = np.random.default_rng(1).random(shape, dtype=np.float32)
        whole = model.run(x)
        geometry = model.geometry
        limit = (geometry.align * 2 + 2 * model.halo) ** 2  # small tiles: many seams
        tiles = plan_tiles(shape[2], shape[3], geometry, limit)
        assert len(tiles) >= 4, key
        tiled = run_tiled(model.run, x, geometry, limit, model.output_channels)
        np.testing.assert_allclose(tiled, whole, atol=2e-4, err_msg=key)
