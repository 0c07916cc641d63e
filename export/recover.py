"""An exported autoencoder back into a training checkpoint, for when the run folder is gone.

Checkpoints are not committed; the ONNX files and their manifest are. That left the shipped members that
were trained elsewhere (the rae members on a GPU) without a checkpoint on any machine that did not train
them: no re-export (a gradient graph for `refine`, a newer opset) and no fine-tuning from them (--init).
The files hold everything needed: each weight is an initializer named as in the model's state dict
(under the graph's `autoencoder.` prefix), and the manifest entry records the model's configuration,
training settings, data and test metrics.

    cae recover models/rae_w16_d2_z1_b1 --out runs/recovered   # -> runs/recovered/rae_w16_d2_z1_b1/checkpoint.pt

What the files cannot give back, and so the recovered run does not have: the optimizer's state (the run
is finished; `--init` starts a new one from its weights) and the per-epoch history. A PCA-started
member's learned change to its axes was folded into them at export: it comes back folded, with the change
at zero, which computes the same function. The rebuilt network must match both ONNX files to
`tolerance` on random inputs, or nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from cae.manifest import Manifest, read_manifest, verify_files
from export import graphs
from export.onnx_export import ParityError, session
from training.config import TrainConfig
from training.model import any_config_from_name, build_autoencoder
from training.run import CHECKPOINT, DataFacts, Run, RunState, known_fields

PREFIX = "autoencoder."  # graphs.EncoderGraph / DecoderGraph hold the model as `autoencoder`
TOLERANCE = 1e-4


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _weights(model: torch.nn.Module, files: dict[str, dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """The state dict from the files' initializers. Two kinds of entry are not there by name: a tile
    projection's `change` (folded into its `axes` at export: zero here) and its per-channel `mean`
    (a constant the exporter names after the op that reshapes it: the one (1, C, 1, 1) initializer of
    that file that no weight claims)."""
    state, missing = {}, []
    claimed = {role: set() for role in files}
    for key, value in model.state_dict().items():
        role = key.split(".")[0]  # "encoder" or "decoder": the file that holds it
        found = files.get(role, {}).get(PREFIX + key)
        if found is not None and tuple(found.shape) == tuple(value.shape):
            state[key] = torch.from_numpy(found.copy())
            claimed[role].add(PREFIX + key)
        elif key.endswith(".change") and PREFIX + key[: -len("change")] + "axes" in files.get(role, {}):
            state[key] = torch.zeros_like(value)
        else:
            missing.append(key)
    for key in list(missing):
        role = key.split(".")[0]
        if not key.endswith(".mean"):
            continue
        shape = (1, model.state_dict()[key].numel(), 1, 1)
        candidates = [v for name, v in files.get(role, {}).items() if name not in claimed[role] and tuple(v.shape) == shape]
        if len(candidates) == 1:
            state[key] = torch.from_numpy(candidates[0].reshape(-1).copy())
            missing.remove(key)
    if missing:
        raise ValueError(f"the ONNX files lack {len(missing)} of the model's weights ({', '.join(missing[:4])}"
                         f"{', ...' if len(missing) > 4 else ''}): not files `cae export` wrote for this model")
    return state


@torch.no_grad()
def _check(model: torch.nn.Module, encoder: Path, decoder: Path, stride: int, tolerance: float) -> dict[str, float]:
    """Max |ONNX - PyTorch| of the rebuilt model on random images and on their latents."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 2 * max(stride, 16), 3 * max(stride, 16), generator=g)
    latent = graphs.EncoderGraph(model)(image)
    diffs = {}
    for name, module, path, x in (("encoder", graphs.EncoderGraph(model), encoder, image),
                                  ("decoder", graphs.DecoderGraph(model, "layers"), decoder, latent)):
        sess = session(path)
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        diffs[name] = float(np.abs(got - module(x).numpy()).max())
        if not diffs[name] <= tolerance:
            raise ParityError(f"{path}: the rebuilt model differs from the file by {diffs[name]:.2e} (tolerance {tolerance:g})")
    return diffs


def recover_run(models: str | Path, name: str, out: str | Path, tolerance: float = TOLERANCE,
                manifest: Manifest | None = None) -> Run:
    """Rebuild member `name` of the export in `models` as a finished run; writes out/<name>/checkpoint.pt."""
    models = Path(models)
    manifest = manifest or read_manifest(models)
    member = manifest.autoencoders.get(name)
    if member is None:
        raise ValueError(f"{models}: no autoencoder {name!r} (it has {', '.join(manifest.autoencoders) or 'none'})")
    verify_files(models, manifest, [member.encoder.key, member.decoder.key])  # its own files, not the whole export's
    facts = member.encoder.facts
    if member.decoder.facts.get("form", "layers") != "layers":
        raise ValueError(f"{name}: its decoder was exported in the {member.decoder.facts['form']!r} form, whose "
                         "weights are computed from the model's; only the 'layers' form can be read back")
    training = facts.get("training", {})
    if training.get("task", "reconstruction") != "reconstruction" or "model" not in training:
        raise ValueError(f"{name}: its manifest entry does not record the model's configuration (training.model)")
    architecture = facts.get("name", name)  # the network's name; a member may be served under another
    config = any_config_from_name(architecture)
    config = type(config)(**known_fields(type(config), training["model"]))
    if config.name != architecture:
        raise ValueError(f"{name}: the recorded configuration is {config.name!r}, not {architecture!r}")
    model = build_autoencoder(config).eval()
    enc_path, dec_path = models / member.encoder.file, models / member.decoder.file
    model.load_state_dict(_weights(model, {"encoder": _initializers(enc_path), "decoder": _initializers(dec_path)}))
    diffs = _check(model, enc_path, dec_path, config.stride, tolerance)

    train = TrainConfig(**known_fields(TrainConfig, training.get("train", {})))
    data = facts["data"]
    # The manifest keeps the data file's name only; the training settings keep the path it was read from.
    source = train.data if train.data and os.path.basename(train.data) == data["source"] else data["source"]
    checkpoint = facts.get("checkpoint", {})
    state = RunState(epoch=checkpoint.get("epochs", train.epochs), test=facts.get("test"),
                     train_seconds=training.get("train_seconds", 0.0), hardware=list(training.get("hardware", [])),
                     init=training.get("init"),
                     recovered={"from": {role: {"file": str(models / e.file), "sha256": e.sha256}
                                         for role, e in (("encoder", member.encoder), ("decoder", member.decoder))},
                                "checkpoint": checkpoint, "parity": diffs})
    path = Path(out) / name / CHECKPOINT
    run = Run(path=path, kind="reconstruction", name=architecture, model_config=config, train_config=train, state=state,
              data=DataFacts(**{**data, "source": source}), weights=model.state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(run.to_dict(), partial)
    partial.replace(path)  # a killed recovery leaves no checkpoint that looks whole
    return run


def recover(paths: list[str], out: str | Path, tolerance: float = TOLERANCE) -> list[Run]:
    """`cae recover`: each path is a member's folder inside an export (models/<name>) or an export folder
    (every autoencoder in it)."""
    runs = []
    for where in map(Path, paths):
        models, names = (where, None) if (where / "manifest.json").is_file() else (where.parent, [where.name])
        manifest = read_manifest(models)
        for name in names or list(manifest.autoencoders):
            run = recover_run(models, name, out, tolerance, manifest)
            print(f"{run.path}: {name} from {models} ({run.state.epoch} epochs, test PSNR "
                  f"{run.state.test['psnr']:.2f} dB; parity " + ", ".join(f"{k} {v:.1e}" for k, v in run.state.recovered["parity"].items()) + ")")
            runs.append(run)
    return runs

