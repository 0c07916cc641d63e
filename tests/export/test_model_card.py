"""The model card's colorizer verdict names which half of the target (PSNR over the baseline, colourfulness) is missed."""
import copy
import json
from pathlib import Path

import pytest

from export import model_card

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "manifest.json"


def _card(psnr_gain: float, colourfulness: float) -> str:
    manifest = copy.deepcopy(json.loads(SHIPPED.read_text()))
    test = manifest["models"]["colorizer"]["test"]
    test["psnr"] = test["grayscale_baseline"]["psnr"] + psnr_gain
    test["colourfulness_ratio"] = colourfulness
    return model_card.render(manifest)


@pytest.mark.parametrize("gain, colour, psnr_half, colour_half", [
    (0.61, 0.678, "this half met", "missed"),
    (0.30, 0.85, "missed", "this half met"),
    (0.10, 0.50, "missed", "missed"),
])
def test_verdict_names_each_half(gain, colour, psnr_half, colour_half):
    card = _card(gain, colour)
    assert f"PSNR {gain:+.2f} dB against the baseline ({psnr_half}), colourfulness {colour:.1%} ({colour_half})" in card


def test_verdict_met_when_both_halves_are():
    card = _card(model_card.COLOUR_TARGET_DB + 0.01, model_card.COLOUR_TARGET_RATIO)
    assert "of the truth's: met: PSNR +0.51 dB against the baseline at 80.0% colourfulness." in card and "not met" not in card


def test_colorizer_line_records_wall_time_and_hardware():
    manifest = json.loads(SHIPPED.read_text())
    colorizer = manifest["models"]["colorizer"]
    colorizer["checkpoint"]["epochs"] = 12
    colorizer["training"].update(train_seconds=600.0, hardware=["GPU X", "CPU Y"])
    assert "(12 epochs, 10 min of training on GPU X then CPU Y)" in model_card.render(manifest)
    del colorizer["training"]["train_seconds"], colorizer["training"]["hardware"]
    assert "(12 epochs)" in model_card.render(manifest).split("## Colorization")[1]


def test_a_kept_colorizer_names_the_report_its_decoding_came_from():
    manifest = json.loads(SHIPPED.read_text())
    manifest["models"]["colorizer"].pop("decoding_rule", None)  # as exports before the rule was recorded
    chosen_by = "--decoding-from results/colorization/x/results.json"
    manifest["command"] = "cae export --reuse models --keep colorizer --out models"
    manifest["models"]["colorizer"]["reused_from"] = {"folder": "models", "created": "then",
                                                      "command": f"cae export --colorizer runs/c {chosen_by} --out models"}
    assert "by `cae color-report`: `results/colorization/x/results.json`" in model_card.render(manifest)
    del manifest["models"]["colorizer"]["reused_from"]
    assert "by `cae color-report`)" in model_card.render(manifest)


def test_the_card_says_when_the_colorizer_keeps_the_input_luma():
    manifest = json.loads(SHIPPED.read_text())
    manifest["models"]["colorizer"]["keeps_input_luma"] = True
    assert "gets the input's luma back" in model_card.render(manifest)
    manifest["models"]["colorizer"].pop("keeps_input_luma")
    assert "luma back" not in model_card.render(manifest)


def test_the_card_states_the_rule_that_chose_the_decoding_and_the_targets_margin():
    manifest = json.loads(SHIPPED.read_text())
    colorizer = manifest["models"]["colorizer"]
    colorizer["decoding_rule"] = {"report": "results/colorization/r/results.json", "min_colourfulness": 0.8}
    colorizer["test"].update(psnr=colorizer["test"]["grayscale_baseline"]["psnr"] + 0.6, colourfulness_ratio=0.818)
    card = model_card.render(manifest)
    assert ("`results/colorization/r/results.json`, the best PSNR among the decodings keeping at least 80% of the true "
            "colourfulness") in card
    assert "colourfulness at least 80% of the truth's: met: PSNR +0.60 dB against the baseline at 81.8% colourfulness." in card
    colorizer["test"]["colourfulness_ratio"] = 0.75
    assert "**not met**: PSNR +0.60 dB against the baseline (this half met), colourfulness 75.0% (missed)" in model_card.render(manifest)


def test_the_card_says_where_the_family_misses_its_target_and_what_was_tried():
    manifest = json.loads(SHIPPED.read_text())
    members = [f for f in manifest["models"].values() if f["role"] == "encoder"]
    for f in members:
        f["test"]["psnr"] = f["test"]["pca_psnr"] + 2.0
    assert "Target missed" not in model_card.render(manifest)
    first, second = members[0], members[1]
    first["test"]["psnr"] = first["test"]["pca_psnr"] + 1.2
    card = model_card.render(manifest)
    assert f"**Target missed** with the encoder's own latents by 1 of {len(members)} members; the best member at each size is short by 0.30 dB at {first['latent_size_32x32']}." in card
    assert "What was tried" in card and "missed by 0.30 dB" in card
    second["latent_size_32x32"] = first["latent_size_32x32"]  # two members at one size: the better one's gap counts
    second["test"]["psnr"] = second["test"]["pca_psnr"] + 1.4
    assert f"short by 0.10 dB at {first['latent_size_32x32']}." in model_card.render(manifest)


def test_the_card_reports_refined_latents_per_member_with_their_margin():
    manifest = json.loads(SHIPPED.read_text())
    decoders = [f for f in manifest["models"].values() if f["role"] == "decoder"]
    for f in decoders:
        f.pop("gradient", None)
    assert "Refined latents" not in model_card.render(manifest)
    decoder = decoders[0]
    pca = manifest["models"][f"{decoder['autoencoder']}.encoder"]["test"]["pca_psnr"]
    decoder["gradient"] = {"file": f"{decoder['autoencoder']}/gradient.onnx", "sha256": "ab" * 32, "lr": 0.02,
                           "parity": {"one tile": 1e-6},
                           "test": {"images": 5000, "psnr": pca + 0.9, "psnr_by_steps": {"10": pca + 1.3, "25": pca + 1.6}}}
    card = model_card.render(manifest)
    assert "### Refined latents (`refine=<steps>`)" in card
    row = next(line for line in card.splitlines() if line.startswith(f"| {decoder['autoencoder']} | 0.02 |"))
    assert row.endswith("| +1.60 | met |") and f"{pca + 1.3:.2f}" in row
    assert f"`{decoder['autoencoder']}/gradient.onnx`" in card and "abababababab" in card
    assert f"**With refined latents** (`refine=25`, the table above), 1 of the 1 members that can refine meet the target ({decoder['autoencoder']})." in card
    decoder["gradient"]["test"]["psnr_by_steps"]["25"] = pca + 1.2
    card = model_card.render(manifest)
    assert "| +1.20 | **missed by 0.30 dB** |" in card
    assert f"0 of the 1 members that can refine meet the target; {decoder['autoencoder']} is short by 0.30 dB." in card


def test_each_member_is_judged_at_the_most_steps_its_own_export_measured():
    # `cae export --refine-steps 10,25,50` for one member, the default 10,25 kept for another (--reuse).
    manifest = json.loads(SHIPPED.read_text())
    decoders = [f for f in manifest["models"].values() if f["role"] == "decoder"]
    for f in decoders:
        f.pop("gradient", None)
    longer, kept = decoders[:2]
    pcas = [manifest["models"][f"{d['autoencoder']}.encoder"]["test"]["pca_psnr"] for d in (longer, kept)]
    longer["gradient"] = {"file": "a/gradient.onnx", "sha256": "ab" * 32, "lr": 0.04, "parity": {"one tile": 1e-6},
                          "test": {"images": 5000, "psnr": pcas[0] + 0.5,
                                   "psnr_by_steps": {"10": pcas[0] + 1.2, "25": pcas[0] + 1.4, "50": pcas[0] + 1.55}}}
    kept["gradient"] = {"file": "b/gradient.onnx", "sha256": "cd" * 32, "lr": 0.02, "parity": {"one tile": 1e-6},
                        "test": {"images": 5000, "psnr": pcas[1] + 0.5, "psnr_by_steps": {"10": pcas[1] + 1.3, "25": pcas[1] + 1.45}}}
    card = model_card.render(manifest)
    rows = {d["autoencoder"]: next(line for line in card.splitlines() if line.startswith(f"| {d['autoencoder']} | {lr} |"))
            for d, lr in ((longer, "0.04"), (kept, "0.02"))}
    assert rows[longer["autoencoder"]].endswith("| +1.55 | met |")
    assert rows[kept["autoencoder"]].endswith("| - | +1.45 (at 25) | **missed by 0.05 dB** |")
    assert "50 steps | margin over PCA at the most steps measured (dB) | target |" in card
    assert (f"(`refine=25/50`, the table above), 1 of the 2 members that can refine meet the target ({longer['autoencoder']}); "
            f"{kept['autoencoder']} is short by 0.05 dB.") in card


def test_a_fine_tuned_member_shows_every_run_it_went_through():
    # A member fine-tuned twice: its facts hold the run it started from, whose facts hold the first.
    manifest = json.loads(SHIPPED.read_text())
    member = next(f for f in manifest["models"].values() if f["role"] == "encoder")
    name, training = member["autoencoder"], member["training"]
    first = {"run": "runs/a", "name": name, "model": training["model"], "epochs": 30, "train_seconds": 1200.0,
             "hardware": ["CPU Y"], "train": {**training["train"], "epochs": 30, "init": None}}
    second = {**first, "run": "runs/b", "epochs": 3, "train_seconds": 600.0, "init": first,
              "train": {**training["train"], "epochs": 3, "refine_steps": 10, "refine_lr": 0.04, "init": "runs/a"}}
    training.pop("init", None)
    member["checkpoint"]["epochs"] = 1
    training["train"].update(epochs=1, init="runs/b")
    training["init"] = second
    card = model_card.render(manifest)
    row = next(line for line in card.splitlines() if line.startswith(f"| {name} |"))
    assert "| 34 (30+3+1) |" in row
    line = next(line for line in card.splitlines() if line.startswith(f"- {name}: "))
    assert line.count("then fine-tuned with") == 2
    assert "(30 epochs, 20 min of training on CPU Y), then fine-tuned with" in line
    assert "--refine-steps 10 --refine-lr 0.04 --init runs/a --epochs 3" in line and "(3 epochs, 10 min of training on CPU Y)" in line
    assert line.index("--init runs/a") < line.index("--init runs/b") and "(1 epoch on " in line
    training.pop("init")
    assert f"| {member['checkpoint']['epochs']} |" in next(line for line in model_card.render(manifest).splitlines()
                                                          if line.startswith(f"| {name} |"))
