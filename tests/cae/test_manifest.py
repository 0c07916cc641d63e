import json

import pytest

from cae.manifest import FORMAT, ManifestError, read_manifest, sha256, verify_files, write_manifest


def _entry(role="encoder", ae="m", **over):
    entry = {"name": ae, "role": role, "file": f"{ae}/{role}.onnx", "sha256": "0" * 64, "stride": 4,
             "inputs": [{"name": "image", "shape": ["N", 3, "H", "W"]}], "outputs": []}
    if role != "colorizer":
        entry["autoencoder"] = ae
    return {**entry, **over}


def _family(*names, default=None, colorizer=True, **over):
    models = {f"{n}.{r}": _entry(r, n) for n in names for r in ("encoder", "decoder")}
    if colorizer:
        models["colorizer"] = _entry("colorizer", "c", file="colorizer.onnx")
    return {"format": FORMAT, "default_autoencoder": default or (names[0] if names else None), "models": models, **over}


def test_round_trip_and_facts_kept(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "encoder.onnx").write_bytes(b"graph")
    manifest = _family("a", "b")
    manifest["models"]["a.encoder"].update(sha256=sha256(tmp_path / "a" / "encoder.onnx"), test={"psnr": 20.0})
    write_manifest(tmp_path, manifest)
    read = read_manifest(tmp_path)
    assert read.models["a.encoder"].stride == 4 and read.models["a.encoder"].facts["test"] == {"psnr": 20.0}
    assert sorted(read.autoencoders) == ["a", "b"] and read.default.name == "a" and read.default.decoder.key == "a.decoder"
    assert read.colorizer.file == "colorizer.onnx"
    with pytest.raises(ManifestError, match="a/decoder.onnx: listed in manifest.json but missing"):
        verify_files(tmp_path, read)


def test_a_folder_of_the_first_format_is_read_as_a_family_of_one(tmp_path):
    old = {"format": "cae-models/1", "command": "cae export ...", "models": {
        "encoder": {k: v for k, v in _entry("encoder", "rae_x", file="encoder.onnx").items() if k not in ("role", "autoencoder")},
        "decoder": {k: v for k, v in _entry("decoder", "rae_x", file="decoder.onnx").items() if k not in ("role", "autoencoder")},
        "colorizer": {k: v for k, v in _entry("colorizer", "c", file="colorizer.onnx").items() if k != "role"}}}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    read = read_manifest(tmp_path)
    assert read.format == FORMAT and read.facts["upgraded_from"] == "cae-models/1" and read.facts["command"] == "cae export ..."
    assert sorted(read.models) == ["colorizer", "rae_x.decoder", "rae_x.encoder"]
    assert read.default.encoder.file == "encoder.onnx" and read.default_autoencoder == "rae_x"


@pytest.mark.parametrize("manifest, message", [
    ({**_family("a"), "format": "cae-models/3"}, "format 'cae-models/3'"),
    ({k: v for k, v in _family("a").items() if k != "format"}, "format None"),
    (_family(colorizer=False), "lists no models"),
    (_family("a", default="b"), "default_autoencoder is 'b', not one of the autoencoders"),
    ({**_family("a"), "models": {"a.encoder": _entry("encoder", "a")}}, "autoencoder 'a' has no decoder"),
    ({**_family("a"), "models": {**_family("a")["models"], "x.upscaler": _entry("upscaler", "x")}}, "role is 'upscaler'"),
    ({**_family("a"), "models": {**_family("a")["models"], "a.encoder": _entry("encoder", "a", stride="4")}},
     "models.a.encoder.stride is missing or not a int"),
    ({**_family("a"), "models": {**_family("a")["models"], "a.encoder": _entry("encoder", "a", file="../x.onnx")}}, "inside the models folder"),
    ({**_family("a"), "models": {**_family("a")["models"], "a.encoder": _entry("encoder", "b")}}, "key <autoencoder>.encoder"),
    ({**_family("a"), "models": {**_family("a")["models"], "a.decoder": _entry("decoder", "a", file="a/encoder.onnx")}}, "share a file"),
    ({**_family("a"), "models": {**_family("a")["models"], "colour": _entry("colorizer", "c", file="c.onnx")}}, "colorizer's key"),
    ({**_family("a"), "models": {**_family("a")["models"], "a.encoder": {k: v for k, v in _entry().items() if k != "sha256"}}}, "sha256"),
])
def test_what_the_service_would_misread_is_refused_at_load(tmp_path, manifest, message):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=message.replace("(", r"\(")):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError):
        write_manifest(tmp_path / "elsewhere", manifest)


def test_missing_or_changed_files(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(tmp_path)
    write_manifest(tmp_path, _family(colorizer=True))
    with pytest.raises(ManifestError, match="missing"):
        verify_files(tmp_path, read_manifest(tmp_path))
    (tmp_path / "colorizer.onnx").write_bytes(b"other")
    with pytest.raises(ManifestError, match="sha256 does not match"):
        verify_files(tmp_path, read_manifest(tmp_path))


def test_only_the_current_format_is_written(tmp_path):
    with pytest.raises(ManifestError, match="this version writes"):
        write_manifest(tmp_path, {**_family("a"), "format": "cae-models/1"})
