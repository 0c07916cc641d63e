import json

import pytest

from cae.manifest import FORMAT, ManifestError, read_manifest, sha256, verify_files, write_manifest


def _entry(**over):
    return {"name": "m", "file": "encoder.onnx", "sha256": "0" * 64, "stride": 4,
            "inputs": [{"name": "image", "shape": ["N", 3, "H", "W"]}], "outputs": [], **over}


def test_round_trip_and_facts_kept(tmp_path):
    (tmp_path / "encoder.onnx").write_bytes(b"graph")
    manifest = {"format": FORMAT, "models": {"encoder": _entry(sha256=sha256(tmp_path / "encoder.onnx"), test={"psnr": 20.0})}}
    write_manifest(tmp_path, manifest)
    read = read_manifest(tmp_path)
    assert read.models["encoder"].stride == 4 and read.models["encoder"].facts["test"] == {"psnr": 20.0}
    verify_files(tmp_path, read)


@pytest.mark.parametrize("manifest, message", [
    ({"format": "cae-models/2", "models": {"encoder": _entry()}}, "format 'cae-models/2'"),
    ({"models": {"encoder": _entry()}}, "format None"),
    ({"format": FORMAT, "models": {}}, "lists no models"),
    ({"format": FORMAT, "models": {"upscaler": _entry()}}, "unknown model role 'upscaler'"),
    ({"format": FORMAT, "models": {"encoder": _entry(stride="4")}}, "models.encoder.stride is missing or not a int"),
    ({"format": FORMAT, "models": {"encoder": {k: v for k, v in _entry().items() if k != "sha256"}}}, "sha256"),
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
    write_manifest(tmp_path, {"format": FORMAT, "models": {"encoder": _entry()}})
    with pytest.raises(ManifestError, match="missing"):
        verify_files(tmp_path, read_manifest(tmp_path))
    (tmp_path / "encoder.onnx").write_bytes(b"other")
    with pytest.raises(ManifestError, match="sha256 does not match"):
        verify_files(tmp_path, read_manifest(tmp_path))
