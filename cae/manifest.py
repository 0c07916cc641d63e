"""The contract between `cae export` and the service: models/manifest.json, read and written here only.

    {"format": "cae-models/1", "models": {"<role>": {"name", "file", "sha256", "stride", "inputs",
     "outputs", "version", ...facts measured at export}}, ...facts about the export}

Export writes it with `write_manifest` (which validates what it writes); the service and `cae export`'s
checks read it with `read_manifest`, which refuses a format it does not know, so a models folder from a
future exporter fails at load with a clear reason instead of being half understood. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = "cae-models/1"
MANIFEST = "manifest.json"
ROLES = ("encoder", "decoder", "colorizer")
FILES = {role: f"{role}.onnx" for role in ROLES}
# Every entry has these, with these types; anything else is a fact the service passes on as it is.
REQUIRED = {"name": str, "file": str, "sha256": str, "stride": int, "inputs": list, "outputs": list}


class ManifestError(ValueError):
    """A models folder that does not hold what its manifest promises."""


@dataclass(frozen=True)
class ModelEntry:
    role: str
    name: str
    file: str
    sha256: str
    stride: int
    inputs: list
    outputs: list
    version: int = 1
    facts: dict = field(default_factory=dict, compare=False)  # the whole entry as written

    @classmethod
    def from_dict(cls, role: str, entry: dict, where: str = MANIFEST) -> ModelEntry:
        if role not in ROLES:
            raise ManifestError(f"{where}: unknown model role {role!r} (known: {', '.join(ROLES)})")
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: models.{role} is not an object")
        for key, kind in REQUIRED.items():
            if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
                raise ManifestError(f"{where}: models.{role}.{key} is missing or not a {kind.__name__}")
        version = entry.get("version", 1)
        if not isinstance(version, int) or version < 1:
            raise ManifestError(f"{where}: models.{role}.version must be a positive integer")
        return cls(role, entry["name"], entry["file"], entry["sha256"], entry["stride"], entry["inputs"],
                   entry["outputs"], version, entry)


@dataclass(frozen=True)
class Manifest:
    format: str
    models: dict[str, ModelEntry]
    facts: dict = field(default_factory=dict, compare=False)  # the whole manifest as written

    @classmethod
    def from_dict(cls, manifest: dict, where: str = MANIFEST) -> Manifest:
        if not isinstance(manifest, dict):
            raise ManifestError(f"{where}: not a JSON object")
        found = manifest.get("format")
        if found != FORMAT:
            raise ManifestError(f"{where}: format {found!r}, but this version of cae reads {FORMAT!r} "
                                "(re-export the models with this version's `cae export`)")
        models = manifest.get("models")
        if not isinstance(models, dict) or not models:
            raise ManifestError(f"{where}: lists no models")
        return cls(found, {role: ModelEntry.from_dict(role, entry, where) for role, entry in models.items()}, manifest)


def read_manifest(folder: str | Path) -> Manifest:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path} not found: a models folder is made by `cae export`")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from None
    return Manifest.from_dict(raw, str(path))


def write_manifest(folder: str | Path, manifest: dict) -> Manifest:
    checked = Manifest.from_dict(manifest, "the manifest being written")
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return checked


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(folder: str | Path, manifest: Manifest) -> None:
    """Every file the manifest lists is there with its recorded checksum."""
    for entry in manifest.models.values():
        path = Path(folder) / entry.file
        if not path.is_file():
            raise ManifestError(f"{path}: listed in {MANIFEST} but missing")
        if sha256(path) != entry.sha256:
            raise ManifestError(f"{path}: sha256 does not match {MANIFEST} (a modified or partly copied file)")
