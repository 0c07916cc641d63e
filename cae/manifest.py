"""The contract between `cae export` and the service: models/manifest.json, read and written here only.

    {"format": "cae-models/2",
     "default_autoencoder": "<autoencoder name>",
     "models": {"<key>": {"role", "name", "file", "sha256", "stride", "inputs", "outputs", "version",
                          "autoencoder" (encoders and decoders), ...facts measured at export}},
     ...facts about the export}

A decoder may carry its gradient graph (export.gradient: latent, image -> gradient of the log-MSE, each
image's MSE), which the service refines latents with: `"gradient": {"file", "sha256", "lr", ...}`. It is
part of its decoder, not a model of its own: no key, not listed by V2.

A models folder holds a family of autoencoders (an encoder and a decoder each, under the keys
`<autoencoder>.encoder` and `<autoencoder>.decoder`, files in a folder of their own) and at most one
colorizer (key `colorizer`). Keys are the names the service's V2 and gRPC endpoints use; `encoder` and
`decoder` are aliases for the default autoencoder's parts.

Export writes it with `write_manifest` (which validates what it writes); the service and `cae export`'s
checks read it with `read_manifest`, which refuses a format it does not know, so a models folder from a
future exporter fails at load with a clear reason instead of being half understood. Folders written by
earlier versions (`cae-models/1`: one autoencoder, keys by role) are read as a family of one. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

FORMAT = "cae-models/2"
OLD_FORMATS = ("cae-models/1",)
MANIFEST = "manifest.json"
ROLES = ("encoder", "decoder", "colorizer")
AUTOENCODER_ROLES = ("encoder", "decoder")
COLORIZER = "colorizer"
# Every entry has these, with these types; anything else is a fact the service passes on as it is.
REQUIRED = {"name": str, "file": str, "sha256": str, "stride": int, "inputs": list, "outputs": list}


class ManifestError(ValueError):
    """A models folder that does not hold what its manifest promises."""


def model_key(autoencoder: str, role: str) -> str:
    """The key (and V2 model name) of one part of an autoencoder."""
    return f"{autoencoder}.{role}"


def model_file(autoencoder: str, role: str) -> str:
    """Where export puts one part of an autoencoder, relative to the models folder."""
    return f"{autoencoder}/{role}.onnx"


def valid_name(name: str) -> bool:
    # Names appear in URLs (/v2/models/<name>.encoder/infer), file paths and Triton repositories.
    return bool(name) and all(c.isalnum() or c in "_-" for c in name)


def _check_inside(file: str, where: str) -> None:
    path = PurePosixPath(file)
    if path.is_absolute() or ".." in path.parts or "\\" in file:
        raise ManifestError(f"{where} must be a path inside the models folder, got {file!r}")


@dataclass(frozen=True)
class ModelEntry:
    key: str
    role: str
    name: str
    file: str
    sha256: str
    stride: int
    inputs: list
    outputs: list
    version: int = 1
    autoencoder: str | None = None  # the family member an encoder or decoder belongs to
    facts: dict = field(default_factory=dict, compare=False)  # the whole entry as written

    @property
    def gradient(self) -> dict | None:
        """A decoder's gradient graph (file, sha256, lr, ...), if it was exported with one."""
        return self.facts.get("gradient")

    def files(self) -> list[tuple[str, str]]:
        """(file, sha256) of the model and of its gradient graph if any."""
        return [(self.file, self.sha256)] + ([(self.gradient["file"], self.gradient["sha256"])] if self.gradient else [])

    @classmethod
    def from_dict(cls, key: str, entry: dict, where: str = MANIFEST) -> ModelEntry:
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: models.{key} is not an object")
        role = entry.get("role")
        if role not in ROLES:
            raise ManifestError(f"{where}: models.{key}.role is {role!r}, not one of {', '.join(ROLES)}")
        for name, kind in REQUIRED.items():
            if not isinstance(entry.get(name), kind) or isinstance(entry.get(name), bool):
                raise ManifestError(f"{where}: models.{key}.{name} is missing or not a {kind.__name__}")
        version = entry.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ManifestError(f"{where}: models.{key}.version must be a positive integer")
        _check_inside(entry["file"], f"{where}: models.{key}.file")
        gradient = entry.get("gradient")
        if gradient is not None:
            if role != "decoder":
                raise ManifestError(f"{where}: models.{key}: only a decoder has a gradient graph")
            if not isinstance(gradient, dict) or not all(isinstance(gradient.get(k), str) for k in ("file", "sha256")):
                raise ManifestError(f"{where}: models.{key}.gradient needs a `file` and its `sha256`")
            if not isinstance(gradient.get("lr"), (int, float)) or isinstance(gradient.get("lr"), bool) or not gradient["lr"] > 0:
                raise ManifestError(f"{where}: models.{key}.gradient.lr must be a positive number (Adam's step size)")
            _check_inside(gradient["file"], f"{where}: models.{key}.gradient.file")
        autoencoder = entry.get("autoencoder")
        if role == COLORIZER:
            if key != COLORIZER:
                raise ManifestError(f"{where}: the colorizer's key must be {COLORIZER!r}, got {key!r}")
        elif not isinstance(autoencoder, str) or not valid_name(autoencoder) or key != model_key(autoencoder, role):
            raise ManifestError(f"{where}: models.{key}: an {role} needs an `autoencoder` name (letters, digits, _ and -) "
                                f"and the key <autoencoder>.{role}")
        return cls(key, role, entry["name"], entry["file"], entry["sha256"], entry["stride"], entry["inputs"],
                   entry["outputs"], version, autoencoder if role != COLORIZER else None, entry)


@dataclass(frozen=True)
class AutoencoderEntry:
    """One family member: the keys of its two parts."""
    name: str
    encoder: ModelEntry
    decoder: ModelEntry

    @property
    def latent_size(self) -> int | None:
        """Latent values for a 32x32 image (recorded at export)."""
        return self.encoder.facts.get("latent_size_32x32")


@dataclass(frozen=True)
class Manifest:
    format: str
    models: dict[str, ModelEntry]
    autoencoders: dict[str, AutoencoderEntry] = field(default_factory=dict)
    default_autoencoder: str | None = None
    facts: dict = field(default_factory=dict, compare=False)  # the whole manifest as written (upgraded if old)

    @property
    def colorizer(self) -> ModelEntry | None:
        return self.models.get(COLORIZER)

    @property
    def default(self) -> AutoencoderEntry | None:
        """The default autoencoder (what `encoder` and `decoder` stand for)."""
        return self.autoencoders.get(self.default_autoencoder)

    @property
    def names(self) -> list[str]:
        """The models by the names `cae export --keep` and CAE_MODELS take: the autoencoders, then `colorizer`."""
        return sorted(self.autoencoders) + ([COLORIZER] if self.colorizer else [])

    def keys_for(self, names: Iterable[str]) -> list[str]:
        """The manifest keys of the models named (autoencoder names, `colorizer`), in the order named."""
        names = list(names)
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise ManifestError(f"{', '.join(map(repr, unknown))}: not in this folder (it has {', '.join(self.names)})")
        return [key for n in dict.fromkeys(names)
                for key in ([COLORIZER] if n == COLORIZER else [self.autoencoders[n].encoder.key, self.autoencoders[n].decoder.key])]

    @classmethod
    def from_dict(cls, manifest: dict, where: str = MANIFEST) -> Manifest:
        if not isinstance(manifest, dict):
            raise ManifestError(f"{where}: not a JSON object")
        found = manifest.get("format")
        if found in OLD_FORMATS:
            manifest = upgrade(manifest, where)
        elif found != FORMAT:
            raise ManifestError(f"{where}: format {found!r}, but this version of cae reads {FORMAT!r} "
                                "(re-export the models with this version's `cae export`)")
        models = manifest.get("models")
        if not isinstance(models, dict) or not models:
            raise ManifestError(f"{where}: lists no models")
        entries = {key: ModelEntry.from_dict(key, entry, where) for key, entry in models.items()}
        files = [f for e in entries.values() for f, _ in e.files()]
        if len(set(files)) != len(files):
            raise ManifestError(f"{where}: two models share a file")
        parts: dict[str, dict[str, ModelEntry]] = {}
        for e in entries.values():
            if e.autoencoder is not None:
                parts.setdefault(e.autoencoder, {})[e.role] = e
        autoencoders = {}
        for name, pair in parts.items():
            missing = [r for r in AUTOENCODER_ROLES if r not in pair]
            if missing:
                raise ManifestError(f"{where}: autoencoder {name!r} has no {missing[0]}")
            autoencoders[name] = AutoencoderEntry(name, pair["encoder"], pair["decoder"])
        default = manifest.get("default_autoencoder")
        if autoencoders and default not in autoencoders:
            raise ManifestError(f"{where}: default_autoencoder is {default!r}, not one of the autoencoders "
                                f"({', '.join(sorted(autoencoders))})")
        if not autoencoders and default is not None:
            raise ManifestError(f"{where}: default_autoencoder {default!r} but no autoencoder is listed")
        return cls(FORMAT, entries, autoencoders, default, manifest)


def upgrade(manifest: dict, where: str = MANIFEST) -> dict:
    """A `cae-models/1` manifest (keys = roles, one autoencoder) as `cae-models/2`, files where they are."""
    models = manifest.get("models")
    if not isinstance(models, dict):
        raise ManifestError(f"{where}: lists no models")
    name = models.get("encoder", {}).get("name") if isinstance(models.get("encoder"), dict) else None
    entries, default = {}, None
    for role, entry in models.items():
        if role not in ROLES:
            raise ManifestError(f"{where}: unknown model role {role!r} (known: {', '.join(ROLES)})")
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: models.{role} is not an object")
        if role == COLORIZER:
            entries[COLORIZER] = {**entry, "role": role}
        else:
            ae = name if isinstance(name, str) and valid_name(name) else "autoencoder"
            entries[model_key(ae, role)], default = {**entry, "role": role, "autoencoder": ae}, ae
    return {**manifest, "format": FORMAT, "upgraded_from": manifest["format"], "default_autoencoder": default,
            "models": entries}


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
    if manifest.get("format") != FORMAT:
        raise ManifestError(f"the manifest being written: format {manifest.get('format')!r}, this version writes {FORMAT!r}")
    checked = Manifest.from_dict(manifest, "the manifest being written")
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return checked


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(folder: str | Path, manifest: Manifest, keys: Iterable[str] | None = None) -> None:
    """Every file the manifest lists (for the models under `keys`, default all) is there with its recorded checksum."""
    for entry in (manifest.models[key] for key in keys) if keys is not None else manifest.models.values():
        for file, digest in entry.files():
            path = Path(folder) / file
            if not path.is_file():
                raise ManifestError(f"{path}: listed in {MANIFEST} but missing")
            if sha256(path) != digest:
                raise ManifestError(f"{path}: sha256 does not match {MANIFEST} (a modified or partly copied file)")
