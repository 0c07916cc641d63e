"""export.recover: a finished run rebuilt from an export's files computes what the lost run did."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from cae.manifest import ManifestError, read_manifest
from export.exporter import ExportOptions, export_models
from export.recover import recover, recover_run
from training.model import PCAAutoencoderConfig, TileProjection
from training.run import Run
from training.train import TrainConfig, train


@pytest.fixture(scope="module")
def pca_export(tmp_path_factory):
    """A PCA-started member trained one epoch (its axes' learned change is not zero) and exported."""
    root = tmp_path_factory.mktemp("pae")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAE_CACHE_DIR", str(root / "cache"))
        train(PCAAutoencoderConfig(components=8, width=4, levels=2, tile=8),
              TrainConfig(data="fake:160", epochs=1, batch_size=32, loss="mse", precision="fp32"), out=root / "run", progress=False)
        export_models([root / "run"], None, root / "models", ExportOptions(gradient=False))
    return root / "run", root / "models"


def same_function(a: torch.nn.Module, b: torch.nn.Module, stride: int) -> None:
    x = torch.rand(2, 3, 2 * max(stride, 8), 3 * max(stride, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        za, zb = a.encode(x), b.encode(x)
        torch.testing.assert_close(zb, za, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.decode(za), a.decode(za), atol=1e-5, rtol=1e-5)


def test_every_member_comes_back_as_the_finished_run_it_was_exported_from(exported_models, tiny_runs, tmp_path):
    models, manifest = exported_models
    runs = {run.name: run for run in recover([str(models)], tmp_path / "recovered")}
    assert set(runs) == set(read_manifest(models).autoencoders)  # the export folder: every member, not the colorizer
    for kind in ("residual", "study"):
        original = Run.load(tiny_runs[kind])
        recovered = Run.load(tmp_path / "recovered" / original.name)  # what was written, read back as any run is
        assert recovered.finished and recovered.kind == "reconstruction"
        assert recovered.model_config == original.model_config and recovered.train_config == original.train_config
        assert recovered.data == original.data and recovered.state.epoch == original.state.epoch
        assert recovered.state.test["psnr"] == pytest.approx(original.state.test["psnr"], abs=0.05)
        assert recovered.optimizer is None and recovered.state.history == []  # not in the files: not made up
        facts = recovered.state.recovered
        assert facts["checkpoint"]["sha256"] == manifest["models"][f"{original.name}.encoder"]["checkpoint"]["sha256"]
        assert facts["from"]["decoder"]["sha256"] == manifest["models"][f"{original.name}.decoder"]["sha256"]
        assert max(facts["parity"].values()) < 1e-4
        same_function(original.model(), recovered.model(), original.model_config.stride)


def test_a_pca_started_member_comes_back_with_its_change_folded_into_the_axes(pca_export, tmp_path):
    run_folder, models = pca_export
    original = Run.load(run_folder)
    change = original.weights["encoder.change"]
    assert change.abs().max() > 0  # one epoch moved the axes: folding has something to fold
    recovered = recover_run(models, original.name, tmp_path)
    weights = recovered.weights
    assert weights["encoder.change"].abs().max() == 0 and weights["decoder.project_back.change"].abs().max() == 0
    torch.testing.assert_close(weights["encoder.axes"], original.weights["encoder.axes"] + TileProjection.STEP * change)
    torch.testing.assert_close(weights["encoder.mean"], original.weights["encoder.mean"])
    same_function(original.model(), recovered.model(), original.model_config.stride)


def test_a_recovered_run_exports_again_says_so_and_can_refine(pca_export, tmp_path):
    run_folder, models = pca_export
    name = Run.load(run_folder).name
    recover([str(models / name)], tmp_path / "recovered")
    manifest = export_models([tmp_path / "recovered" / name], None, tmp_path / "again")
    decoder = manifest["models"][f"{name}.decoder"]
    assert decoder["training"]["recovered"]["checkpoint"]["path"].endswith("run/checkpoint.pt")
    assert decoder["gradient"]["lr"] > 0  # the point of recovering: a gradient graph the first export did not have
    before = read_manifest(models).models[f"{name}.decoder"].facts["test"]["psnr"]
    assert decoder["test"]["psnr"] == pytest.approx(before, abs=1e-3)
    card = (tmp_path / "again" / "MODEL_CARD.md").read_text()
    assert "by `cae recover`" in card and "being gone" in card


def test_a_member_served_under_another_name_sits_beside_its_network_and_comes_back(pca_export, tmp_path):
    # Two runs of one network (a decoder fine-tuned for refining beside the plain one): the second gets its own name.
    run_folder, models = pca_export
    original = Run.load(run_folder)
    name, alias = original.name, f"{original.name}_refine"
    manifest = export_models([run_folder], None, tmp_path / "both", ExportOptions(gradient=False), reuse=models,
                             names={run_folder: alias})
    assert {f"{name}.encoder", f"{alias}.encoder", f"{alias}.decoder"} <= set(manifest["models"])
    entry = manifest["models"][f"{alias}.encoder"]
    assert (entry["name"], entry["autoencoder"], entry["file"]) == (name, alias, f"{alias}/encoder.onnx")
    rows = {row["name"]: row for row in manifest["selection"]["candidates"]}
    assert rows[alias]["architecture"] == name and "architecture" not in rows[name]
    assert rows[alias]["multiply_adds_per_pixel"] == rows[name]["multiply_adds_per_pixel"]  # the network's cost
    assert set(read_manifest(tmp_path / "both").autoencoders) == {name, alias}
    card = (tmp_path / "both" / "MODEL_CARD.md").read_text()
    assert f"| {alias} (default) | " in card or f"| {alias} | " in card
    assert f"- {alias}: `cae train --model {name} " in card
    # Recovered, it is a run of the network (a fine-tune can start from it) in a folder named for the member.
    (recovered,) = recover([str(tmp_path / "both" / alias)], tmp_path / "recovered")
    assert recovered.name == name and recovered.path.parent.name == alias
    same_function(original.model(), recovered.model(), original.model_config.stride)
    # Kept by a later export, it stays a member of its own, costed as its network.
    again = export_models([], None, tmp_path / "again", reuse=tmp_path / "both")
    assert {row["name"]: row.get("architecture") for row in again["selection"]["candidates"]} == {name: None, alias: name}


def test_files_that_are_not_the_members_own_are_refused_and_nothing_is_written(exported_models, tmp_path):
    models, manifest = exported_models
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    name = manifest["default_autoencoder"]
    other = next(n for n in read_manifest(copy).autoencoders if n != name)
    with pytest.raises(ValueError, match="no autoencoder 'nope'"):
        recover_run(copy, "nope", tmp_path / "out")
    # Another member's decoder put in its place, its checksum updated: the weights are not this model's.
    entry = manifest["models"][f"{name}.decoder"]
    shutil.copy(copy / manifest["models"][f"{other}.decoder"]["file"], copy / entry["file"])
    edited = json.loads((copy / "manifest.json").read_text())
    edited["models"][f"{name}.decoder"]["sha256"] = manifest["models"][f"{other}.decoder"]["sha256"]
    (copy / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="lack .* of the model's weights"):
        recover_run(copy, name, tmp_path / "out")
    # The checksum left as it was: the manifest's check fails first.
    edited["models"][f"{name}.decoder"]["sha256"] = entry["sha256"]
    (copy / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(ManifestError):
        recover_run(copy, name, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_sub_pixel_decoder_cannot_be_read_back(exported_models, tmp_path):
    models, manifest = exported_models
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    name = manifest["default_autoencoder"]
    edited = json.loads((copy / "manifest.json").read_text())
    edited["models"][f"{name}.decoder"]["form"] = "sub-pixel"
    (copy / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="'sub-pixel' form"):
        recover_run(copy, name, tmp_path / "out")


def test_cli_recovers_a_member_and_says_what_it_wrote(exported_models, tmp_path):
    models, manifest = exported_models
    name = manifest["default_autoencoder"]
    done = subprocess.run([sys.executable, "-m", "cae", "recover", str(models / name), "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / name / 'checkpoint.pt'}: {name} from {models}" in done.stdout
    assert Run.load(tmp_path / name).finished
    missing = subprocess.run([sys.executable, "-m", "cae", "recover", str(tmp_path / "nowhere" / name)], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("cae recover: error:") and len(missing.stderr.splitlines()) == 1


def test_a_run_fine_tuned_from_a_recovered_one_remembers_the_recovery(pca_export, tmp_path):
    run_folder, models = pca_export
    name = Run.load(run_folder).name
    (recovered,) = recover([str(models / name)], tmp_path / "recovered")
    config = PCAAutoencoderConfig(components=8, width=4, levels=2, tile=8)
    result = train(config, TrainConfig(data="fake:160", epochs=1, batch_size=32, loss="mse", precision="fp32",
                                       refine_steps=2, init=str(recovered.folder)), out=tmp_path / "tuned", progress=False)
    assert result["init"]["recovered"] == recovered.state.recovered["from"]
    assert result["init"]["recovered"]["decoder"]["file"] == str(models / name / "decoder.onnx")
