import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from cae.cli import main


def test_train_dry_run(tmp_path, capsys):
    assert main(["train", "--dry-run", "--quiet", "--out", str(tmp_path)]) == 0
    assert '"name": "cae_l5_ch2_k3_s2"' in capsys.readouterr().out
    assert (tmp_path / "checkpoint.pt").exists()


def test_train_refines_when_asked(tmp_path, capsys):
    assert main(["train", "--dry-run", "--quiet", "--model", "rae_w4_d1_z1_b1", "--loss", "mse", "--refine-steps", "2",
                 "--refine-lr", "0.02", "--out", str(tmp_path)]) == 0
    train = json.loads((tmp_path / "config.json").read_text())["train"]
    assert (train["refine_steps"], train["refine_lr"]) == (2, 0.02)
    assert main(["train", "--dry-run", "--quiet", "--refine-steps", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "refine_steps must be >= 0" in capsys.readouterr().err


def test_train_takes_a_model_name_or_axes(tmp_path, capsys):
    assert main(["train", "--dry-run", "--quiet", "--model", "cae_l3_ch4_k5_s1", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--dry-run", "--quiet", "--fewer-layers", "--channel-factor", "4", "--kernel-size", "5",
                 "--compression", "1", "--loss", "mse", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert out.count("training cae_l3_ch4_k5_s1 (latent 32768)") == 2


def test_sweep_and_figures_dry_run(tmp_path, capsys):
    args = ["sweep", "--dry-run", "--quiet", "--out", str(tmp_path), "--only", "cae_l5_ch2_k3_s2", "cae_l5_ch1_k3_s4"]
    assert main(args) == 0
    assert "2/2 trials finished" in capsys.readouterr().out
    assert main(["figures", "--sweep", str(tmp_path)]) == 0
    assert (tmp_path / "fig2_latent_size.png").exists()
    # Fig. 2 again with a served family beside the sweep (from the saved results, no images decoded).
    from tests.conftest import TINY_MODELS
    from training.figures import family_points

    before = (tmp_path / "fig2_latent_size.png").read_bytes()
    assert main(["figures", "--sweep", str(tmp_path), "--family", str(TINY_MODELS)]) == 0
    assert (tmp_path / "fig2_latent_size.png").read_bytes() != before
    with Image.open(tmp_path / "fig2_latent_size.png") as im:
        assert im.size[0] > 300
    points = family_points(TINY_MODELS)
    assert [(p["name"], p["latent_size"], p["default"]) for p in points] == [("tiny_autoencoder", 512, True), ("tiny_fine", 1024, False)]
    # The member with a gradient graph also has its refined point (the most steps the export measured).
    manifest = json.loads((TINY_MODELS / "manifest.json").read_text())
    by_steps = manifest["models"]["tiny_autoencoder.decoder"]["gradient"]["test"]["psnr_by_steps"]
    assert points[0]["refine_steps"] == 25 and points[0]["refined_psnr"] == by_steps["25"] and "refined_psnr" not in points[1]
    # Each member's margin over PCA, plain and refined, in a figure of its own.
    margins = tmp_path / "margins.png"
    assert main(["figures", "--sweep", str(tmp_path), "--family", str(TINY_MODELS), "--margins", str(margins)]) == 0
    with Image.open(margins) as im:
        assert im.size[0] > 300
    assert main(["figures", "--sweep", str(tmp_path), "--margins", str(margins)]) == 2


def test_figures_of_a_sweep_whose_trials_ran_elsewhere(tmp_path, capsys):
    # A store brought back from another machine has results.jsonl lines but no trial weights: Fig. 2 and
    # pca.json are still drawn from the lines, and Fig. 3 is skipped with the reason instead of an error.
    args = ["sweep", "--dry-run", "--quiet", "--out", str(tmp_path), "--only", "cae_l5_ch2_k3_s2", "cae_l5_ch1_k3_s4"]
    assert main(args) == 0
    shutil.rmtree(tmp_path / "trials" / "cae_l5_ch2_k3_s2")
    for name in ("fig2_latent_size.png", "fig3_reconstructions.png", "pca.json"):
        (tmp_path / name).unlink()
    capsys.readouterr()
    assert main(["figures", "--sweep", str(tmp_path)]) == 0
    assert "Fig. 3 not drawn: no weights here for cae_l5_ch2_k3_s2" in capsys.readouterr().out
    assert (tmp_path / "fig2_latent_size.png").exists() and (tmp_path / "pca.json").exists()
    assert not (tmp_path / "fig3_reconstructions.png").exists()
    # A sweep without the first model has no Fig. 3 to draw, and says so.
    assert main(["sweep", "--dry-run", "--quiet", "--out", str(tmp_path / "other"), "--only", "cae_l5_ch1_k3_s4"]) == 0
    assert "Fig. 3 not drawn: the first model (cae_l5_ch2_k3_s2) is not in this sweep" in capsys.readouterr().out


def test_lr_scan_dry_run(tmp_path):
    assert main(["lr-scan", "--dry-run", "--quiet", "--lrs", "0.001", "0.01", "--out", str(tmp_path)]) == 0
    with Image.open(tmp_path / "fig1_learning_rates.png") as im:
        assert im.size[0] > 300


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really")
    assert main(["train", "--quiet", "--data", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cae train: error: ") and "broken.tar.gz" in err and "Traceback" not in err
    assert main(["train", "--quiet", "--model", "cae_l9", "--dry-run"]) == 2
    assert "not a model name" in capsys.readouterr().err
    assert main(["figures", "--sweep", str(tmp_path / "none")]) == 2


def test_console_script_reports_errors_without_traceback(tmp_path):
    missing = tmp_path / "missing"
    proc = subprocess.run([sys.executable, "-m", "cae", "train", "--data", str(missing)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 2
    assert not (tmp_path / "runs").exists()  # nothing written for a run that could not start
    assert f"{missing}: no such file or folder" in proc.stderr and "Traceback" not in proc.stderr


def test_train_colorizer_dry_run(tmp_path, capsys):
    assert main(["train-colorizer", "--dry-run", "--quiet", "--width", "8", "--out", str(tmp_path)]) == 0
    assert '"name": "color_lab_unet8_classification"' in capsys.readouterr().out
    assert main(["train-colorizer", "--dry-run", "--quiet", "--encoding", "ratio", "--out", str(tmp_path / "r")]) == 2
    assert "use encoding lab" in capsys.readouterr().err


def test_color_report(tmp_path, capsys):
    runs = tmp_path / "runs"
    for enc in ("ycbcr", "ycbcr_centred", "difference"):
        assert main(["train-colorizer", "--dry-run", "--quiet", "--arch", "cae", "--cae", "cae_l3_ch1_k3_s2",
                     "--color-loss", "l2", "--encoding", enc, "--out", str(runs / f"study_{enc}")]) == 0
    assert main(["train-colorizer", "--dry-run", "--quiet", "--width", "8", "--out", str(runs / "unet")]) == 0
    assert main(["color-report", "--runs", str(runs), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "results.md").read_text()
    assert "grayscale baseline" in table and table.count("| study_") == 3 and "| unet |" in table
    for fig in ("colorizations.png", "fig4_difference_encoding.png", "fig5_study_ycbcr.png", "fig5_study_ycbcr_centred.png",
                "fig6_study_difference.png", "fig5_ycbcr_mismatches.png"):
        with Image.open(tmp_path / "report" / fig) as im:
            assert im.size[0] > 300
    assert main(["color-report", "--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "r2")]) == 2
    assert "Diagnostics" in table and "ycbcr_centred:" in table and "difference:" in table
    assert "Decoding of unet" in table and "chosen on validation" in table


def test_a_colorizer_fine_tuned_as_served_then_reported_under_another_rule(tmp_path, capsys):
    base, tuned = tmp_path / "base", tmp_path / "runs" / "tuned"
    assert main(["train-colorizer", "--dry-run", "--quiet", "--width", "4", "--out", str(base)]) == 0
    assert main(["train-colorizer", "--dry-run", "--quiet", "--width", "4", "--init", str(base), "--loss", "psnr",
                 "--min-colourfulness", "0.8", "--temperature", "1", "--prior-correction", "0.85", "--saturation", "1.5",
                 "--out", str(tuned)]) == 0
    config = json.loads((tuned / "config.json").read_text())
    assert config["train"]["init"] == str(base) and config["train"]["min_colourfulness"] == 0.8
    assert config["model"]["saturation"] == 1.5 and config["model"]["prior_correction"] == 0.85
    assert main(["color-report", "--runs", str(tuned.parent), "--out", str(tmp_path / "report"), "--min-colourfulness", "0.9"]) == 0
    facts = json.loads((tmp_path / "report" / "results.json").read_text())
    scan, chosen = facts["temperatures"]["tuned"]["scan"], facts["temperatures"]["tuned"]["chosen"]
    vivid = [s for s in scan if s["colourfulness_ratio"] >= 0.9]
    assert facts["min_colourfulness"] == 0.9
    entry = next(s for s in scan if all(s[k] == v for k, v in chosen.items()))
    assert entry == (max(vivid, key=lambda s: s["psnr"]) if vivid else max(scan, key=lambda s: s["colourfulness_ratio"]))
    # Fine-tuning from another network is one clear line, not a traceback.
    assert main(["train-colorizer", "--dry-run", "--quiet", "--width", "8", "--init", str(base), "--out", str(tmp_path / "x")]) == 2
    assert "a run starts only from the same network" in capsys.readouterr().err


def test_the_reports_default_rule_is_the_modules():
    from cae.cli import build_parser
    from training.color_report import MIN_COLOURFULNESS

    assert build_parser().parse_args(["color-report"]).min_colourfulness == MIN_COLOURFULNESS
