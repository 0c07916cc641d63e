import json

import pytest
from PIL import Image

from training import sweep as sweep_module
from training.figures import sweep_figures
from training.model import FIRST_MODEL, config_from_name
from training.sweep import read_results, sweep
from training.train import TrainConfig

NAMES = ["cae_l5_ch2_k3_s2", "cae_l3_ch1_k5_s4", "cae_l3_ch1_k3_s2"]
CONFIGS = [config_from_name(n) for n in NAMES]
QUICK = TrainConfig(data="fake:300", epochs=1, batch_size=32, precision="fp32")


def test_sweep_persists_tables_and_figures(tmp_path):
    results = sweep(CONFIGS, QUICK, out=tmp_path, progress=False)
    assert sorted(r["name"] for r in results) == sorted(NAMES)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("name,fewer_layers,channel_factor,kernel_size,compression,latent_size,parameters,test_bce")
    md = (tmp_path / "results.md").read_text()
    assert all(n in md for n in NAMES) and md.startswith("| name |")
    by_name = {r["name"]: r for r in results}
    assert by_name["cae_l3_ch1_k5_s4"]["latent_size"] == 2 * 2 * 8
    picks = sweep_figures(tmp_path, results)["picks"]
    assert picks["first"] == FIRST_MODEL.name
    assert picks["best"] == min(results, key=lambda r: r["test"]["bce"])["name"]
    for name in ("fig2_latent_size.png", "fig3_reconstructions.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 400
    pca = json.loads((tmp_path / "pca.json").read_text())
    # More components never reconstruct worse.
    assert all(a["mse"] >= b["mse"] - 1e-12 for a, b in zip(pca, pca[1:]))


class Killed(Exception):
    pass


def test_a_killed_sweep_resumes_and_never_reruns_a_finished_trial(tmp_path, monkeypatch):
    real_train = sweep_module.train
    calls, kill = [], [True]

    def dies_on_second_trial(model_config, config, out, data, progress):
        calls.append(model_config.name)
        if len(calls) == 2 and kill.pop():
            raise Killed
        return real_train(model_config, config, out=out, data=data, progress=progress)

    monkeypatch.setattr(sweep_module, "train", dies_on_second_trial)
    with pytest.raises(Killed):
        sweep(CONFIGS, QUICK, out=tmp_path, progress=False)
    assert [r["name"] for r in read_results(tmp_path)] == [NAMES[0]]
    kill.append(False)
    # A torn line from a kill mid-append is ignored, not fatal.
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"name": "cae_l3_ch1_k3_s2", "te')
    calls.clear()
    results = sweep(CONFIGS, QUICK, out=tmp_path, progress=False)
    assert calls == NAMES[1:]
    assert sorted(r["name"] for r in results) == sorted(NAMES)
    calls.clear()
    sweep(CONFIGS, QUICK, out=tmp_path, progress=False)
    assert calls == []


def test_a_store_from_before_a_setting_existed_still_counts(tmp_path, monkeypatch):
    # Rows written by an older version lack settings added since (here `init` and `min_colourfulness`),
    # which those trials ran at their defaults: a resumed sweep must not train them again.
    sweep(CONFIGS[:1], QUICK, out=tmp_path, progress=False)
    rows = read_results(tmp_path)
    for row in rows:
        del row["train"]["init"], row["train"]["min_colourfulness"]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls = []
    monkeypatch.setattr(sweep_module, "train", lambda model_config, *a, **k: calls.append(model_config.name))
    assert [r["name"] for r in sweep(CONFIGS[:1], QUICK, out=tmp_path, progress=False)] == [NAMES[0]]
    assert calls == []
    # A setting that differs from the default still makes it another trial.
    other = TrainConfig(**{**QUICK.__dict__, "min_colourfulness": 0.5})
    assert sweep_module._settings_key(other) != sweep_module._settings_key(rows[0]["train"])


def test_other_settings_do_not_count_as_finished(tmp_path):
    sweep(CONFIGS[:1], QUICK, out=tmp_path, progress=False)
    other = TrainConfig(**{**QUICK.__dict__, "lr": 0.01})
    with pytest.raises(ValueError, match="other settings"):
        # The trial folder holds the old run: refuse to mix it with new settings rather than overwrite.
        sweep(CONFIGS[:1], other, out=tmp_path, progress=False)


@pytest.mark.slow
def test_parallel_workers_match_the_serial_sweep(tmp_path):
    serial = {r["name"]: r["test"] for r in sweep(CONFIGS, QUICK, out=tmp_path / "serial", progress=False)}
    parallel = {r["name"]: r["test"] for r in sweep(CONFIGS, QUICK, out=tmp_path / "parallel", workers=2, progress=False)}
    assert serial.keys() == parallel.keys()
    for name in serial:
        assert parallel[name] == pytest.approx(serial[name], rel=1e-4)
