import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.choose import MAX_DEFAULT_MULTIPLY_ADDS, Candidate, choose
from cae.manifest import MANIFEST, ManifestError, read_manifest
from export.exporter import ExportOptions, export_models, verify
from export.onnx_export import ParityError, parity, read_metadata
from export import graphs
from training.color import luma
from training.model import multiply_adds_per_pixel
from training.run import Run
from training.train import CHECKPOINT, load_checkpoint, model_from_checkpoint


def file_of(models, name):
    """A model's file: by key, or `encoder`/`decoder` for the default autoencoder's."""
    manifest = read_manifest(models)
    entry = getattr(manifest.default, name) if name in ("encoder", "decoder") else manifest.models[name]
    return models / entry.file


def run(models, name, x):
    sess = ort.InferenceSession(str(file_of(models, name)), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]


def entry(manifest, name):
    """A manifest entry by key, or `encoder`/`decoder` for the default autoencoder's."""
    key = f"{manifest['default_autoencoder']}.{name}" if name in ("encoder", "decoder") else name
    return manifest["models"][key]


def test_the_contract_names_types_and_dynamic_axes(exported_models):
    models, manifest = exported_models
    expected = {"encoder": ("image", ["N", 3, "H", "W"], "latent"), "decoder": ("latent", None, "image"),
                "colorizer": ("gray", ["N", 1, "H", "W"], "image")}
    for role, (inp, shape, outp) in expected.items():
        graph = onnx.load(str(file_of(models, role))).graph
        assert [i.name for i in graph.input] == [inp] and [o.name for o in graph.output] == [outp]
        assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        if shape:
            assert dims == shape
        assert entry(manifest, role)["inputs"][0]["shape"] == dims


@pytest.mark.parametrize("n,h,w", [(1, 32, 32), (3, 64, 96), (2, 16, 48)])
def test_any_batch_and_size_that_is_a_multiple_of_the_stride(exported_models, n, h, w):
    models, manifest = exported_models
    enc = entry(manifest, "encoder")
    x = np.random.default_rng(0).random((n, 3, h, w), dtype=np.float32)
    z = run(models, "encoder", x)
    assert z.shape == (n, enc["latent_channels"], h // enc["stride"], w // enc["stride"])
    y = run(models, "decoder", z)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    rgb = run(models, "colorizer", luma(torch.from_numpy(x)).numpy())
    assert rgb.shape == x.shape and rgb.min() >= 0 and rgb.max() <= 1


def test_a_global_context_colorizer_exports_with_parity_at_every_size(tmp_path, monkeypatch):
    # Its image-wide mean makes the graph depend on H and W as a whole: checked at 32x32, 64x96 and 64x64.
    from export.exporter import export_colorizer
    from training.colorize import ColorizerConfig
    from training.train import TrainConfig, train

    monkeypatch.setenv("CAE_CACHE_DIR", str(tmp_path / "cache"))
    train(ColorizerConfig(width=4, global_context=True), TrainConfig(data="fake:160", epochs=1, batch_size=32, precision="fp32"),
          out=tmp_path / "run", progress=False)
    (tmp_path / "out").mkdir()
    facts = export_colorizer(tmp_path / "run", tmp_path / "out", ExportOptions(), None)
    assert facts["name"] == "color_lab_unet4g_classification" and facts["global_context"] is True
    assert set(facts["parity"]) == {"random_32x32", "real_32x32", "random_64x96", "real_64x64"}
    assert max(facts["parity"].values()) <= 1e-4
    graph = onnx.load(str(tmp_path / "out" / "colorizer.onnx")).graph
    assert any(node.op_type == "ReduceMean" for node in graph.node)


def test_a_saturated_decoding_from_a_colour_report_is_exported_and_declared_image_wide(tiny_runs, tmp_path, monkeypatch):
    # `cae export --decoding-from` takes the report's chosen decoding, saturation included; saturating about
    # the image's mean colour makes outputs depend on the whole image, so the colorizer is declared image-wide.
    from cae.cli import main

    monkeypatch.setenv("CAE_CACHE_DIR", str(tmp_path / "cache"))
    run = tiny_runs["colorizer"]
    report = tmp_path / "results.json"
    chosen = {"temperature": 1.0, "prior_correction": 0.75, "saturation": 1.5}
    report.write_text(json.dumps({"temperatures": {run.name: {"chosen": chosen}}}))
    out = tmp_path / "models"
    assert main(["export", "--colorizer", str(run), "--decoding-from", str(report), "--out", str(out)]) == 0
    facts = read_manifest(out).models["colorizer"].facts
    assert facts["decoding"] == chosen and facts["global_context"] is True
    # A report from before the rule was recorded chose at 70%.
    assert facts["decoding_rule"] == {"report": str(report), "min_colourfulness": 0.7}
    assert max(facts["parity"].values()) <= 1e-4  # PyTorch and ONNX agree with the saturation inside the graph
    card = (out / "MODEL_CARD.md").read_text()
    assert "scaled by 1.5 (saturation)" in card and "temperature 1 and prior correction 0.75" in card
    # The flag overrides the report; without saturation the export stays local (tileable).
    plain = tmp_path / "plain"
    assert main(["export", "--colorizer", str(run), "--decoding-from", str(report), "--saturation", "1", "--out", str(plain)]) == 0
    facts = read_manifest(plain).models["colorizer"].facts
    assert facts["decoding"]["saturation"] == 1.0 and "global_context" not in facts
    # A report under another rule says so.
    report.write_text(json.dumps({"temperatures": {run.name: {"chosen": chosen}}, "min_colourfulness": 0.8}))
    assert main(["export", "--colorizer", str(run), "--decoding-from", str(report), "--out", str(tmp_path / "r80")]) == 0
    assert read_manifest(tmp_path / "r80").models["colorizer"].facts["decoding_rule"]["min_colourfulness"] == 0.8


@pytest.mark.parametrize("report, flags, message", [
    ({"temperatures": {"other_run": {"chosen": {"temperature": 1.0}}}}, [], "no decoding chosen for run 'colorizer' (it has other_run)"),
    ({"rows": []}, [], "not a color-report results.json"),
    ({"temperatures": {}}, ["no-colorizer"], "give --colorizer too"),
])
def test_a_decoding_report_that_does_not_fit_is_a_clear_error(tiny_runs, tmp_path, capsys, report, flags, message):
    from cae.cli import main

    path = tmp_path / "results.json"
    path.write_text(json.dumps(report))
    runs = ["--autoencoder", str(tiny_runs["study"])] if flags else ["--colorizer", str(tiny_runs["colorizer"])]
    assert main(["export", *runs, "--decoding-from", str(path), "--out", str(tmp_path / "models")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_colorizer_takes_luma_and_gives_it_back(exported_models):
    """The graph turns Y into the model's own gray channel (Lab L) and puts Y back into its output: only the
    chroma is the model's (as for photos, where the service lays it under the full-size luma)."""
    models, manifest = exported_models
    y = torch.rand(2, 1, 32, 32) * 0.8 + 0.1
    rgb = torch.from_numpy(run(models, "colorizer", y.numpy()))
    inside = ((rgb > 0) & (rgb < 1)).all(1, keepdim=True)  # clamped pixels aside
    assert inside.float().mean() > 0.9 and torch.allclose(luma(rgb)[inside], y[inside], atol=1e-5)
    assert manifest["models"]["colorizer"]["keeps_input_luma"] is True


def test_manifest_checksums_and_metadata_describe_the_files(exported_models):
    models, manifest = exported_models
    assert verify(models) == json.loads((models / MANIFEST).read_text())
    for role, facts in manifest["models"].items():
        stored = read_metadata(models / facts["file"])
        assert stored == {k: v for k, v in facts.items() if k not in ("sha256", "bytes")}
        assert facts["opset"] == 18 and facts["exporter"] == "dynamo"
        assert max(facts["parity"].values()) <= 1e-4
        assert facts["checkpoint"]["sha256"] and facts["data"]["split_seed"] == 0
        assert set(facts["test"]) >= {"images", "psnr", "ssim"}
    assert entry(manifest, "encoder")["test"]["pca_psnr"] == manifest["selection"]["chosen"]["pca_psnr"]
    card = (models / "MODEL_CARD.md").read_text()
    assert entry(manifest, "encoder")["sha256"][:12] in card and "PCA" in card and "## Limits" in card


def test_every_autoencoder_given_is_a_member_of_the_family(exported_models, tiny_runs):
    models, manifest = exported_models
    names = {Run.load(tiny_runs[k]).name for k in ("residual", "study")}
    assert set(read_manifest(models).autoencoders) == names
    assert set(manifest["models"]) == {f"{n}.{r}" for n in names for r in ("encoder", "decoder")} | {"colorizer"}
    for name in names:
        enc, dec = manifest["models"][f"{name}.encoder"], manifest["models"][f"{name}.decoder"]
        assert enc["file"] == f"{name}/encoder.onnx" and dec["file"] == f"{name}/decoder.onnx" and enc["autoencoder"] == name
        candidate = next(c for c in manifest["selection"]["candidates"] if c["name"] == name)
        assert enc["test"]["pca_psnr"] == candidate["pca_psnr"] and abs(enc["test"]["psnr"] - candidate["psnr"]) < 0.05
        x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
        assert run(models, f"{name}.decoder", run(models, f"{name}.encoder", x)).shape == x.shape
    assert manifest["default_autoencoder"] == manifest["selection"]["chosen"]["name"]
    card = (models / "MODEL_CARD.md").read_text()
    assert "the autoencoder family" in card and all(f"| {n}" in card for n in names) and "(default)" in card


def test_reuse_keeps_what_an_export_does_not_replace(exported_models, tiny_runs, tmp_path):
    models, first = exported_models
    residual = Run.load(tiny_runs["residual"]).name
    study = Run.load(tiny_runs["study"]).name
    # Only the study autoencoder again (named the default): the residual one and the colorizer are kept as they were.
    manifest = export_models([tiny_runs["study"]], None, tmp_path / "models", reuse=models, default=study)
    assert manifest["default_autoencoder"] == study and manifest["selection"]["rule"].startswith("named on the command line")
    for key in (f"{residual}.encoder", f"{residual}.decoder", "colorizer"):
        kept = manifest["models"][key]
        assert kept["sha256"] == first["models"][key]["sha256"] and kept["reused_from"]["created"] == first["created"]
        assert (tmp_path / "models" / kept["file"]).read_bytes() == (models / first["models"][key]["file"]).read_bytes()
    assert "reused_from" not in manifest["models"][f"{study}.encoder"]
    assert {c["name"] for c in manifest["selection"]["candidates"]} == {residual, study}
    assert verify(tmp_path / "models") and "kept from an earlier export" in (tmp_path / "models" / "MODEL_CARD.md").read_text()
    # Everything kept (the checkpoints all gone): the family is chosen again from the rows it was chosen from.
    again = export_models([], None, tmp_path / "again", reuse=models)
    rows = [{k: row[k] for k in ("run", "name", "psnr", "pca_psnr")} for row in first["selection"]["candidates"]]
    assert [{k: row[k] for k in rows[0]} for row in again["selection"]["candidates"]] == rows
    assert again["default_autoencoder"] == first["default_autoencoder"] and set(again["models"]) == set(first["models"])
    only_colorizer = export_models([tiny_runs["study"]], None, tmp_path / "third", reuse=models, keep=["colorizer"])
    assert sorted(only_colorizer["models"]) == sorted(["colorizer", f"{study}.decoder", f"{study}.encoder"])
    with pytest.raises(ValueError, match="--keep 'nope': not in this folder"):
        export_models([tiny_runs["study"]], None, tmp_path / "other", reuse=models, keep=["nope"])
    with pytest.raises(ValueError, match="--default nope: not one of the autoencoders"):
        export_models([tiny_runs["study"]], None, tmp_path / "other", reuse=models, default="nope")
    with pytest.raises(ValueError, match="served by the same name"):
        export_models([tiny_runs["study"], tiny_runs["study"]], None, tmp_path / "other")


def test_a_tampered_file_fails_verification(exported_models, tmp_path):
    models, _ = exported_models
    copy = shutil.copytree(models, tmp_path / "models")
    with open(file_of(copy, "decoder"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="sha256 does not match"):
        verify(copy)
    file_of(copy, "encoder").unlink()
    with pytest.raises(ManifestError, match="missing"):
        verify(copy)


def test_exported_metrics_match_pytorch_on_the_test_split(exported_models, tiny_runs):
    _, manifest = exported_models
    for candidate in manifest["selection"]["candidates"]:
        ckpt = load_checkpoint(f"{candidate['run']}/{CHECKPOINT}")
        exported = manifest["models"][f"{candidate['name']}.encoder"]["test"]["psnr"]
        assert exported == pytest.approx(ckpt["state"]["test"]["psnr"], abs=1e-3)


def test_the_rule_picks_the_largest_margin_over_pca_within_the_latent_and_cost_limits():
    def c(name, latent, psnr, pca, cost=40_000):
        return Candidate(run=name, name=name, latent_size=latent, epochs=1, fraction=1.0, psnr=psnr, pca_psnr=pca,
                         multiply_adds=cost)

    cands = [c("a", 64, 22.0, 21.4), c("b", 128, 24.5, 23.7), c("c", 2048, 40.0, 30.0), c("d", 32, 20.0, 20.0)]
    assert choose(cands).name == "b"  # +0.8 beats +0.6; c is over the latent limit
    assert choose([c("x", 64, 21.0, 21.4), c("y", 32, 19.0, 19.2)]).name == "y"  # all below PCA: the smallest gap
    # A wide member with the best margin is served by name but is too slow on photos to be the default.
    assert choose(cands + [c("wide", 128, 26.0, 23.7, cost=MAX_DEFAULT_MULTIPLY_ADDS + 1)]).name == "b"
    with pytest.raises(ValueError, match="at most 1024 values"):
        choose([c("c", 2048, 40.0, 30.0)])
    with pytest.raises(ValueError, match="--default"):
        choose([c("wide", 128, 26.0, 23.7, cost=400_000)])


def test_multiply_adds_count_what_the_network_runs_per_pixel():
    # The study's first model, by hand: 3x3 convolutions 3->8 at full resolution, 8->12 at 1/4 of the pixels,
    # 12->16 at 1/16, then 16->12 at 1/4 and 12->3 at full resolution (the sub-pixel decoder computes them at
    # the lower resolution with 4x the output channels: the same count). The sub-pixel kernels, computed
    # once per call from the weights, are not per-pixel work and must not be counted.
    by_hand = 9 * (3 * 8 + 8 * 12 / 4 + 12 * 16 / 16 + 16 * 12 / 4 + 12 * 3)
    assert multiply_adds_per_pixel("cae_l5_ch2_k3_s2") == pytest.approx(by_hand)
    small, wide = multiply_adds_per_pixel("rae_w16_d2_z2_b1"), multiply_adds_per_pixel("rae_w64_d2_z2_b1")
    assert small < MAX_DEFAULT_MULTIPLY_ADDS < multiply_adds_per_pixel("rae_w64_d1_z2_b1")
    assert 15 < wide / small < 16.1  # 4x the width: 16x the convolutions' work, less the fixed 3-channel ends


def test_parity_failure_is_loud(exported_models, tiny_runs):
    models, manifest = exported_models
    model = model_from_checkpoint(load_checkpoint(f"{manifest['selection']['chosen']['run']}/{CHECKPOINT}"))
    with torch.no_grad():
        next(model.parameters()).add_(0.5)  # PyTorch now differs from the exported file
    with pytest.raises(ParityError, match="differs from PyTorch"):
        parity(graphs.EncoderGraph(model), file_of(models, "encoder"), {"random": torch.rand(2, 3, 32, 32)}, 1e-4)


def test_torchscript_exporter_and_triton_repository(tiny_runs, tmp_path):
    manifest = export_models([tiny_runs["study"]], None, tmp_path / "models", ExportOptions(exporter="torchscript", opset=17),
                             triton_dir=tmp_path / "triton")
    name = Run.load(tiny_runs["study"]).name
    assert set(manifest["models"]) == {f"{name}.encoder", f"{name}.decoder"}
    assert entry(manifest, "encoder")["exporter"] == "torchscript" and entry(manifest, "encoder")["opset"] == 17
    x = np.random.default_rng(1).random((2, 3, 64, 32), dtype=np.float32)
    assert run(tmp_path / "models", "decoder", run(tmp_path / "models", "encoder", x)).shape == x.shape
    config = (tmp_path / f"triton/{name}.encoder/config.pbtxt").read_text()
    assert f'name: "{name}.encoder"' in config
    assert 'name: "image"' in config and "dims: [ 3, -1, -1 ]" in config and "dynamic_batching" in config
    assert (tmp_path / f"triton/{name}.decoder/1/model.onnx").read_bytes() == file_of(tmp_path / "models", "decoder").read_bytes()


def test_the_sub_pixel_decoder_form(tiny_runs, exported_models, tmp_path):
    # The same function as the decoder's layers: upsampling gone, DepthToSpace in, parity checked by the export.
    manifest = export_models([tiny_runs["study"]], None, tmp_path / "models", ExportOptions(decoder_form="sub-pixel"))
    name = Run.load(tiny_runs["study"]).name
    assert manifest["models"][f"{name}.decoder"]["form"] == "sub-pixel"
    assert exported_models[1]["models"][f"{name}.decoder"]["form"] == "layers"
    ops = {n.op_type for n in onnx.load(tmp_path / "models" / name / "decoder.onnx").graph.node}
    default_ops = {n.op_type for n in onnx.load(exported_models[0] / name / "decoder.onnx").graph.node}
    assert "DepthToSpace" in ops and "Resize" not in ops and "DepthToSpace" not in default_ops
    model = model_from_checkpoint(load_checkpoint(tiny_runs["study"] / CHECKPOINT)).eval()
    latent = torch.rand(2, model.config.latent_shape()[0], 4, 6)
    with torch.no_grad():
        layers = torch.sigmoid(model.decoder(latent)).numpy()  # the study's layers, one by one
    np.testing.assert_allclose(run(tmp_path / "models", "decoder", latent.numpy()), layers, atol=1e-5)


def test_a_failed_export_keeps_the_previous_models(exported_models, tiny_runs, tmp_path):
    models = shutil.copytree(exported_models[0], tmp_path / "models")
    before = (models / MANIFEST).read_text()
    with pytest.raises(ParityError):
        export_models([tiny_runs["residual"]], None, models, ExportOptions(tolerance=0.0 - 1.0))
    assert (models / MANIFEST).read_text() == before
    assert verify(models)
    assert not models.with_name(models.name + ".partial").exists()  # nothing left behind


def test_cli_errors_are_one_line(tiny_runs, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cae", "export", "--autoencoder", str(tiny_runs["colorizer"]),
                           "--out", str(tmp_path / "m")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "is a colorization run, not an autoencoder" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "cae", "export", "--autoencoder", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "no checkpoint.pt" in proc.stderr
    assert list(tmp_path.glob("models*")) == []  # checked before anything is written


EXPORT_ONE_ENCODER = """
import sys
from pathlib import Path
import torch
from export import graphs
from export.onnx_export import export_graph
from training.model import ResidualAutoencoder, ResidualAutoencoderConfig
torch.manual_seed(0)
model = ResidualAutoencoder(ResidualAutoencoderConfig(width=4, downsamplings=2, latent_channels=1))
export_graph(graphs.EncoderGraph(model), graphs.encoder_spec(1), torch.rand(1, 3, 32, 32), 4, Path(sys.argv[1]))
"""


def test_exporting_the_same_model_twice_gives_the_same_bytes(tmp_path):
    # torch.export's metadata depends on the process's string hashing: two processes, two hash seeds (1 and 3
    # order its range constraints differently).
    paths = [tmp_path / f"encoder{seed}.onnx" for seed in (1, 3)]
    for seed, path in zip((1, 3), paths):
        subprocess.run([sys.executable, "-c", EXPORT_ONE_ENCODER, str(path)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": str(seed)})
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_the_card_names_the_colorizer_training_options_away_from_their_defaults():
    from export.model_card import _train_command

    train = {"epochs": 16, "batch_size": 64, "lr": 0.001, "schedule": "cosine", "augment": "none", "fraction": 1.0}
    model = {"encoding": "lab", "arch": "unet", "loss": "classification", "width": 32}
    name = "color_lab_unet32_classification"
    assert _train_command("colorization", name, model, train) == (
        "cae train-colorizer --encoding lab --arch unet --color-loss classification --schedule cosine --epochs 16 --batch-size 64 --lr 0.001")
    model = {**model, "global_context": True, "width": 48}
    assert " --width 48 --global-context --schedule cosine " in _train_command("colorization", name, model, train)
    # A run fine-tuned on its output as served names its decoding, objective and starting run.
    tuned = {**train, "loss": "psnr", "min_colourfulness": 0.82, "init": "runs/colorization/base"}
    command = _train_command("colorization", name, {**model, "temperature": 1.0, "prior_correction": 0.85, "saturation": 1.5}, tuned)
    assert " --global-context --temperature 1 --prior-correction 0.85 --saturation 1.5 --schedule cosine --loss psnr " in command
    assert " --min-colourfulness 0.82 --init runs/colorization/base --epochs 16 " in command


def test_the_card_says_what_a_fine_tuned_model_started_from():
    from export.model_card import _trained_with

    train = {"epochs": 24, "batch_size": 64, "lr": 0.001, "loss": "bce"}
    model = {"encoding": "lab", "arch": "unet", "loss": "classification", "width": 64}
    init = {"name": "c", "model": model, "train": train, "epochs": 24, "train_seconds": 5820.0, "hardware": ["CPU A"]}
    tuned = {**train, "epochs": 2, "lr": 0.0002, "loss": "psnr", "init": "runs/base"}
    facts = {"name": "c", "checkpoint": {"epochs": 2},
             "training": {"task": "colorization", "model": model, "train": tuned, "train_seconds": 1500.0, "hardware": ["CPU B"], "init": init}}
    text = _trained_with(facts)
    first, then = text.split(", then fine-tuned with ")
    assert first.endswith("--epochs 24 --batch-size 64 --lr 0.001` (24 epochs, 97 min of training on CPU A)")
    assert then.endswith("--loss psnr --init runs/base --epochs 2 --batch-size 64 --lr 0.0002` (2 epochs, 25 min of training on CPU B)")
    del facts["training"]["init"]
    assert _trained_with(facts) == then


def test_the_card_names_a_refining_fine_tune_and_a_recovered_start():
    from export.model_card import _trained_with

    model = {"width": 16, "downsamplings": 2, "latent_channels": 1, "blocks": 1}
    train = {"epochs": 100, "batch_size": 128, "lr": 0.002, "loss": "mse", "schedule": "cosine"}
    init = {"name": "rae_w16_d2_z1_b1", "model": model, "train": train, "epochs": 100, "train_seconds": 440.0,
            "hardware": ["GPU A"], "recovered": {"encoder": {"file": "models/x/encoder.onnx", "sha256": "0" * 64}}}
    tuned = {**train, "epochs": 3, "lr": 0.0003, "refine_steps": 10, "refine_lr": 0.04, "init": "runs/recovered/rae_w16_d2_z1_b1"}
    facts = {"name": "rae_w16_d2_z1_b1", "checkpoint": {"epochs": 3},
             "training": {"task": "reconstruction", "model": model, "train": tuned, "train_seconds": 1320.0, "hardware": ["CPU B"], "init": init}}
    first, then = _trained_with(facts).split(", then fine-tuned with ")
    assert first.endswith("(100 epochs, 7 min of training on GPU A; its checkpoint rebuilt from an earlier export by `cae recover`)")
    assert " --schedule cosine --refine-steps 10 --refine-lr 0.04 --init runs/recovered/rae_w16_d2_z1_b1 --epochs 3 " in then
    assert "--refine" not in first


def test_the_cli_names_the_same_decoding_parameters_as_the_model():
    # export/cli.py keeps its own copy so the CLI imports no torch; the two must not drift apart.
    from export.cli import DECODING
    from training.colorize import DECODING_PARAMETERS

    assert DECODING == DECODING_PARAMETERS


def test_each_decoder_carries_its_gradient_graph_and_what_refining_gains(exported_models):
    models, manifest = exported_models
    decoders = {k: e for k, e in manifest["models"].items() if e["role"] == "decoder"}
    assert len(decoders) == 2
    for key, decoder in decoders.items():
        gradient = decoder["gradient"]
        path = models / gradient["file"]
        assert path.is_file() and gradient["file"] == f"{decoder['autoencoder']}/gradient.onnx"
        assert read_metadata(path)["decoder"] == key and read_metadata(path)["lr"] == gradient["lr"]
        assert gradient["lr"] in ExportOptions().refine_lrs and set(gradient["validation"]["psnr_by_lr"]) == {"0.01", "0.02", "0.04"}
        assert max(gradient["parity"].values()) <= 1e-4
        # Adam from the encoder's latent, each step judged by the decoder: never worse than plain on average here.
        by_steps = gradient["test"]["psnr_by_steps"]
        assert set(by_steps) == {"10", "25"} and gradient["test"]["psnr"] == round(decoder["test"]["psnr"], 3)
        assert by_steps["25"] > gradient["test"]["psnr"]
    # An export that keeps these models keeps their gradient graphs, byte for byte.
    kept = models.parent / "kept"
    kept_manifest = export_models([], None, kept, reuse=models)
    for key, decoder in decoders.items():
        assert kept_manifest["models"][key]["gradient"]["sha256"] == decoder["gradient"]["sha256"]
        assert (kept / decoder["gradient"]["file"]).read_bytes() == (models / decoder["gradient"]["file"]).read_bytes()
    verify(kept)
    gradient_file = kept / next(iter(decoders.values()))["gradient"]["file"]
    gradient_file.write_bytes(gradient_file.read_bytes() + b"\0")
    with pytest.raises(ManifestError, match="gradient.onnx: sha256 does not match"):
        verify(kept)


def test_no_gradient_exports_decoders_that_cannot_refine(tiny_runs, tmp_path):
    from cae.cli import main

    out = tmp_path / "models"
    assert main(["export", "--autoencoder", str(tiny_runs["study"]), "--out", str(out), "--no-gradient"]) == 0
    manifest = read_manifest(out)
    (ae,) = manifest.autoencoders.values()
    assert ae.decoder.gradient is None and not list(out.rglob("gradient.onnx"))
    verify(out)
