"""The sweep on a real local Ray instance: same results as the local backend, same resume semantics."""

import json

import pytest

from training.model import AutoencoderConfig
from training.sweep import read_results, sweep
from training.train import TrainConfig

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

CONFIGS = [AutoencoderConfig(channel_factor=1, compression=4, fewer_layers=True),
           AutoencoderConfig(channel_factor=1, compression=2, fewer_layers=True),
           AutoencoderConfig(channel_factor=1, compression=4)]
SMALL = TrainConfig(data="fake:120", epochs=1, batch_size=32, precision="fp32")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_backend_matches_the_local_backend(local_ray, tmp_path):
    local = {r["name"]: r for r in sweep(CONFIGS[:2], SMALL, out=tmp_path / "local", progress=False)}
    remote = {r["name"]: r for r in sweep(CONFIGS[:2], SMALL, out=tmp_path / "ray", progress=False, backend="ray")}
    assert set(local) == set(remote) == {c.name for c in CONFIGS[:2]}
    for name in local:
        assert remote[name]["test"] == pytest.approx(local[name]["test"], rel=1e-4, abs=1e-6)
    assert len(read_results(tmp_path / "ray")) == 2
    assert (tmp_path / "ray" / "results.md").exists()


def test_ray_backend_resumes_and_never_reruns_a_finished_trial(local_ray, tmp_path):
    out = tmp_path / "sweep"
    sweep(CONFIGS[:1], SMALL, out=out, progress=False, backend="ray")  # as if the driver was killed after one trial
    first = read_results(out)[0]
    ckpt = out / "trials" / CONFIGS[0].name / "checkpoint.pt"
    stamp = ckpt.stat().st_mtime_ns
    results = sweep(CONFIGS, SMALL, out=out, progress=False, backend="ray")
    assert sorted(r["name"] for r in results) == sorted(c.name for c in CONFIGS)
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3 and [json.loads(x)["name"] for x in lines].count(CONFIGS[0].name) == 1
    assert ckpt.stat().st_mtime_ns == stamp  # the finished trial was not touched
    assert {r["name"]: r for r in results}[CONFIGS[0].name]["test"] == first["test"]
    # A local resume of the same store agrees that everything is done.
    assert len(sweep(CONFIGS, SMALL, out=out, progress=False)) == 3
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
