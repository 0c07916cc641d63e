"""Checkpoints in, the contract's files out: one folder per autoencoder of the family (<name>/encoder.onnx,
<name>/decoder.onnx), colorizer.onnx, manifest.json (cae.manifest) and MODEL_CARD.md.

`export_models` exports each graph, checks it with onnx.checker (full check), compares it with PyTorch on
random and real images at two sizes (failing on any difference past the tolerance), scores the exported
files themselves on the test split, and writes the manifest, each file's metadata and the model card.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from cae.manifest import COLORIZER, FORMAT, Manifest, ManifestError, model_file, model_key, read_manifest, verify_files, write_manifest
from export import graphs, model_card, triton
from export.choose import RULE, Candidate, choose, evaluate_candidates
from export.gradient import export_decoder_gradient
from export.onnx_export import DEFAULT_OPSET, describe, export_graph, io_description, parity, session, sha256
from cae.refine import adam_steps, onnx_gradient
from training.colorize import colour_indices, grayscale_baseline
from training.color import luma
from training.data import ImageArray
from training.metrics import image_means
from training.model import for_inference, multiply_adds_per_pixel
from training.run import Run



@dataclass(frozen=True)
class ExportOptions:
    exporter: str = "dynamo"  # dynamo | torchscript
    opset: int = DEFAULT_OPSET
    tolerance: float = 1e-4  # max |ONNX - PyTorch| allowed, on outputs in [0, 1] or latents
    version: int = 1
    decoder_form: str = "layers"  # layers | sub-pixel (export/graphs.py: DecoderGraph)
    parity_images: int = 8  # real images per parity case
    eval_batch_size: int = 500
    # The decoder's gradient graph (export.gradient), with which the service refines latents: Adam's step
    # size is the one of `refine_lrs` that reconstructs the first `refine_validation_images` validation
    # images best after max(refine_steps) steps; the test split is then scored at each of `refine_steps`.
    gradient: bool = True
    refine_steps: tuple[int, ...] = (10, 25)
    refine_lrs: tuple[float, ...] = (0.01, 0.02, 0.04)
    refine_validation_images: int = 256


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _as_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float() / 255


def _mosaic(x: torch.Tensor) -> torch.Tensor:
    """(4k, C, H, W) -> (k, C, 2H, 2W): real content at twice the size, for the second parity size."""
    k = x.shape[0] // 4
    top = torch.cat([x[0:k], x[k:2 * k]], dim=3)
    bottom = torch.cat([x[2 * k:3 * k], x[3 * k:4 * k]], dim=3)
    return torch.cat([top, bottom], dim=2)


def _image_cases(real: torch.Tensor, stride: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h = w = 32
    # A second size that is not square and not the training size, rounded to the stride.
    h2, w2 = max(stride, 64 // stride * stride), max(stride, 96 // stride * stride)
    return {"random_32x32": torch.rand(4, real.shape[1], h, w, generator=g),
            "real_32x32": real,
            f"random_{h2}x{w2}": torch.rand(2, real.shape[1], h2, w2, generator=g),
            "real_64x64": _mosaic(real)}


def _ort_batches(sess: ort.InferenceSession, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    name = sess.get_inputs()[0].name
    return torch.cat([torch.from_numpy(sess.run(None, {name: b.numpy()})[0]) for b in x.split(batch_size)])


def score_autoencoder(encoder: Path, decoder: Path, images: torch.Tensor, batch_size: int) -> dict:
    """Metrics of the exported pair itself (onnxruntime), each a mean over the images."""
    enc, dec = session(encoder), session(decoder)
    return image_means((_ort_batches(dec, _ort_batches(enc, x, batch_size), batch_size), x) for x in images.split(batch_size))


def score_colorizer(colorizer: Path, images: torch.Tensor, batch_size: int) -> dict:
    """Metrics of the exported colorizer fed luma Y, as the service feeds it (not its training gray channel)."""
    sess = session(colorizer)
    return image_means(((_ort_batches(sess, luma(x), batch_size), x) for x in images.split(batch_size)), colour=True)


def score_refined(encoder: Path, decoder: Path, gradient: Path, images: torch.Tensor, steps: tuple[int, ...], lr: float,
                  batch_size: int) -> dict[int, float]:
    """Mean per-image PSNR of the exported files after each step count in `steps` of refining the
    encoder's latent against the decoder (cae.refine, as the service does it)."""
    enc, dec, grad = session(encoder), session(decoder), onnx_gradient(session(gradient))
    decoded: dict[int, list] = {t: [] for t in steps}
    for x in images.split(batch_size):
        latent = enc.run(None, {"image": x.numpy()})[0]
        if 0 in decoded:
            decoded[0].append((torch.from_numpy(dec.run(None, {"latent": latent})[0]), x))
        for t, z in adam_steps(grad, latent, x.numpy(), max(steps), lr):
            if t in decoded:
                decoded[t].append((torch.from_numpy(dec.run(None, {"latent": z})[0]), x))
    return {t: round(image_means(pairs)["psnr"], 3) for t, pairs in decoded.items()}


def export_gradient(graph: torch.nn.Module, stride: int, latent_channels: int, out: Path, name: str, enc_path: Path,
                    dec_path: Path, data: ImageArray, split, options: ExportOptions, plain_psnr: float) -> dict:
    """The decoder's gradient graph beside it, checked against autograd, Adam's step size chosen on
    validation and the refined reconstruction scored on the test split; its facts for the decoder's entry."""
    path = out / model_file(name, "gradient")
    diffs = export_decoder_gradient(graph, latent_channels, stride, path, options.opset, options.tolerance)
    print(f"  {path.name}: parity max relative |ONNX - autograd| " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    final = max(options.refine_steps)
    val = _as_float(data.images[split.val[: options.refine_validation_images]])
    by_lr = {lr: score_refined(enc_path, dec_path, path, val, (final,), lr, options.eval_batch_size)[final]
             for lr in (options.refine_lrs if len(val) else [])}
    lr = max(by_lr, key=by_lr.get) if by_lr else options.refine_lrs[0]  # no validation split: the first
    test = _as_float(data.images[split.test])
    refined = score_refined(enc_path, dec_path, path, test, tuple(options.refine_steps), lr, options.eval_batch_size)
    print(f"  refined: lr {lr:g} (validation PSNR at {final} steps: " + ", ".join(f"{k:g} {v:.2f}" for k, v in by_lr.items()) +
          "), test PSNR " + ", ".join(f"{t} steps {p:.2f}" for t, p in refined.items()) + f" (plain {plain_psnr:.2f})")
    return {"file": model_file(name, "gradient"), "inputs": ["latent", "image"], "outputs": ["gradient", "mse"],
            "loss": "sum over images of log(per-image MSE)", "parity": diffs, "optimizer": "adam", "lr": lr,
            "lr_rule": f"of {list(options.refine_lrs)}, the best mean PSNR on the first {len(val)} validation images after {final} steps",
            "validation": {"images": len(val), "steps": final, "psnr_by_lr": {f"{k:g}": round(v, 3) for k, v in by_lr.items()}},
            "test": {"images": len(test), "psnr": round(plain_psnr, 3), "psnr_by_steps": {str(t): p for t, p in refined.items()}}}


def _common_facts(run: Run, options: ExportOptions) -> dict:
    return {
        "version": options.version,
        "opset": options.opset,
        "exporter": options.exporter,
        "checkpoint": {"path": _relative(run.path), "sha256": sha256(run.path), "epochs": run.state.epoch},
        "training": {"task": run.kind, "model": asdict(run.model_config), "train": asdict(run.train_config),
                     "train_seconds": run.state.train_seconds, "hardware": run.state.hardware,
                     **({"init": run.state.init} if run.state.init else {}),
                     **({"recovered": run.state.recovered} if run.state.recovered else {})},
        "data": {**asdict(run.data), "source": os.path.basename(str(run.data.source))},
    }


def _export_one(module, spec, example, stride, path, options, cases, reference=None) -> dict[str, float]:
    """Export `module`; parity against `reference` (the trained model as it is, where `module` is its inference form)."""
    export_graph(module, spec, example, stride, path, exporter=options.exporter, opset=options.opset)
    onnx.checker.check_model(str(path), full_check=True)
    diffs = parity(reference if reference is not None else module, path, cases, options.tolerance)
    print(f"  {path.name}: parity max |ONNX - PyTorch| " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    return diffs


def export_autoencoder(candidate: Candidate, out: Path, options: ExportOptions, data: ImageArray | None) -> dict[str, dict]:
    """One member of the family: its two files under out/<name>/, and their manifest entries by key."""
    run = Run.load(candidate.run)
    if run.kind != "reconstruction":
        raise ValueError(f"{run.folder} is a {run.kind} run, not an autoencoder")
    model, config = run.model(), run.model_config
    data = run.images(data)
    split = run.split(data)
    real = _as_float(data.images[split.test[: options.parity_images]])
    stride, latent_channels = config.stride, config.latent_shape(config.stride, config.stride)[0]
    enc_graph, dec_graph = graphs.EncoderGraph(model).eval(), graphs.DecoderGraph(model, options.decoder_form).eval()
    inference = for_inference(model)  # exported; parity is checked against the model as trained
    enc_inference = graphs.EncoderGraph(inference).eval()
    dec_inference = graphs.DecoderGraph(inference, options.decoder_form).eval()
    member = candidate.name  # the name it is served by: the model's, unless the export named it otherwise
    print(f"exporting {run.name} from {_relative(run.path)}" + (f" as {member}" if member != run.name else ""))

    image_cases = _image_cases(real, stride)
    with torch.no_grad():
        latent_cases = {f"encoded_{k}": enc_graph(v) for k, v in image_cases.items() if k.startswith("real")}
        g = torch.Generator().manual_seed(1)
        scale = float(latent_cases["encoded_real_32x32"].std())
        latent_cases["random_4x4_latents"] = torch.randn(2, latent_channels, 4, 4, generator=g) * scale
    enc_path, dec_path = out / model_file(member, "encoder"), out / model_file(member, "decoder")
    enc_path.parent.mkdir(parents=True, exist_ok=True)
    enc_example, dec_example = image_cases["random_32x32"], latent_cases["encoded_real_32x32"]
    if 32 // stride < 2:  # torch.export would fix a latent grid of one unit to that size: export from a larger one
        enc_example = next(v for k, v in image_cases.items() if k.startswith("random") and min(v.shape[2:]) >= 2 * stride)
        with torch.no_grad():
            dec_example = enc_graph(enc_example)
    enc_parity = _export_one(enc_inference, graphs.encoder_spec(latent_channels), enc_example, stride, enc_path, options, image_cases, enc_graph)
    dec_parity = _export_one(dec_inference, graphs.decoder_spec(latent_channels), dec_example, stride, dec_path, options, latent_cases, dec_graph)

    test = _as_float(data.images[split.test])
    metrics = score_autoencoder(enc_path, dec_path, test, options.eval_batch_size)
    common = {**_common_facts(run, options), "name": run.name, "autoencoder": member, "stride": stride,
              "latent_channels": latent_channels, "latent_size_32x32": config.latent_size(32, 32),
              "parameters": sum(p.numel() for p in model.parameters())}
    test_facts = {"images": len(split.test), **metrics, "pca_psnr": round(candidate.pca_psnr, 3)}
    gradient = {}
    if options.gradient:
        # Traced from the layers form whatever the decoder's: the same function, and dynamic shapes trace through it.
        layers = graphs.DecoderGraph(inference, "layers").eval()
        gradient = {"gradient": export_gradient(layers, stride, latent_channels, out, member, enc_path, dec_path, data,
                                                split, options, metrics["psnr"])}
    return {
        model_key(member, "encoder"): {**common, "role": "encoder", "file": model_file(member, "encoder"), "parity": enc_parity,
                                       "test": test_facts, "parameters": sum(p.numel() for p in model.encoder.parameters())},
        model_key(member, "decoder"): {**common, "role": "decoder", "file": model_file(member, "decoder"), "form": options.decoder_form,
                                       "parity": dec_parity, "test": test_facts, **gradient,
                                       "parameters": sum(p.numel() for p in model.decoder.parameters())},
    }


def export_colorizer(run: Path, out: Path, options: ExportOptions, data: ImageArray | None, decoding: dict | None = None,
                     decoding_rule: dict | None = None) -> dict:
    """The colorizer's graph, parity and test scores; `decoding` (temperature, prior_correction, saturation,
    any of them) replaces the run's own decoding parameters; `decoding_rule` says how it was chosen (export.cli.decoding_from)."""
    run = Run.load(run)
    if run.kind != "colorization":
        raise ValueError(f"{run.folder} is not a colorizer run (task {run.kind!r})")
    colorizer = run.model()
    if colorizer.bins is not None:
        # The decoding is part of the graph: set it before export.
        colorizer.bins.set_decoding(**(decoding or {}))
    elif decoding:
        raise ValueError(f"{run.folder}: an L2 colorizer has no decoding to set ({', '.join(decoding)})")
    decoding = colorizer.bins.decoding if colorizer.bins is not None else None
    data = run.images(data)
    split = run.split(data)
    test_idx = colour_indices(data.images, split.test)
    real = luma(_as_float(data.images[test_idx[: options.parity_images]]))
    stride = graphs.colorizer_stride(colorizer)
    graph = graphs.ColorizerGraph(colorizer).eval()
    print(f"exporting {run.name} from {_relative(run.path)}" + (f" with decoding {decoding}" if decoding else ""))
    path = out / "colorizer.onnx"
    cases = _image_cases(real, stride)
    diffs = _export_one(graph, graphs.COLORIZER_SPEC, cases["random_32x32"], stride, path, options, cases)
    test = _as_float(data.images[test_idx])
    metrics = score_colorizer(path, test, options.eval_batch_size)
    baseline = grayscale_baseline(data.images, test_idx)
    # A colorizer that fuses image-wide features, or saturates about the image's mean colour, has no finite
    # receptive field: the service never tiles it.
    image_wide = colorizer.config.global_context or (decoding is not None and decoding["saturation"] != 1)
    context = {"global_context": True} if image_wide else {}
    return {**_common_facts(run, options), "role": "colorizer", "file": path.name, "name": run.name, "stride": stride,
            **context, "decoding": decoding, **({"decoding_rule": decoding_rule} if decoding_rule else {}), "keeps_input_luma": True, "parameters": colorizer.num_parameters(), "parity": diffs,
            "test": {"images": len(test_idx), "grayscale_images_left_out": len(split.test) - len(test_idx),
                     **metrics, "grayscale_baseline": baseline}}


def _reused(reuse: Path | None, replaced: set[str], staging: Path, keep: list[str] | None = None) -> tuple[dict[str, dict], list[Candidate]]:
    """The models of an earlier export that this one keeps (their checkpoints may be long gone): every
    autoencoder not exported again by name, and the colorizer unless one is exported; only those named in
    `keep` if given (autoencoder names, `colorizer`). Files are checked against their manifest and copied
    unchanged into this export's layout."""
    if reuse is None:
        return {}, []
    try:
        old: Manifest = read_manifest(reuse)
        verify_files(reuse, old)
    except ManifestError as e:
        raise ValueError(f"--reuse {reuse}: {e}") from None
    known = set(old.names)
    try:
        old.keys_for(keep or [])
    except ManifestError as e:
        raise ValueError(f"--keep {e} ({reuse})") from None
    replaced = replaced | (known - set(keep) if keep is not None else set())
    kept: dict[str, dict] = {}
    for key, entry in old.models.items():
        name = entry.autoencoder
        if (name or COLORIZER) in replaced:
            continue
        file = model_file(name, entry.role) if name else "colorizer.onnx"
        (staging / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(reuse / entry.file, staging / file)
        if entry.gradient:
            shutil.copyfile(reuse / entry.gradient["file"], staging / model_file(name, "gradient"))
        origin = {"folder": _relative(reuse), "created": old.facts.get("created"), "command": old.facts.get("command")}
        kept[key] = {**entry.facts, "file": file, "reused_from": entry.facts.get("reused_from", origin),
                     **({"gradient": {**entry.gradient, "file": model_file(name, "gradient")}} if entry.gradient else {})}
    # The earlier selection's rows, where it has them, so that exporting the same models again records the
    # runs as they were given then and the figures it chose by (margins to rounding).
    earlier = {row["name"]: row for row in (old.facts.get("selection") or {}).get("candidates", [])}
    candidates = []
    for name, ae in old.autoencoders.items():
        facts = ae.encoder.facts
        if name in replaced or "pca_psnr" not in facts.get("test", {}):
            continue
        if name in earlier:
            row = earlier[name]
            candidates.append(Candidate(Path(row["run"]), name, row["latent_size"], row["epochs"], row["fraction"],
                                        row["psnr"], row["pca_psnr"], multiply_adds_per_pixel(facts["name"]), facts["name"]))
            continue
        candidates.append(Candidate(Path(facts.get("checkpoint", {}).get("path", name)), name, facts["latent_size_32x32"],
                                    facts.get("checkpoint", {}).get("epochs", 0), facts.get("data", {}).get("fraction", 1.0),
                                    facts["test"]["psnr"], facts["test"]["pca_psnr"], multiply_adds_per_pixel(facts["name"]), facts["name"]))
    return kept, candidates


def _export_into(staging: Path, autoencoders: list[Path], colorizer: Path | None, options: ExportOptions,
                 data: ImageArray | None, decoding: dict | None, command: str | None,
                 reuse: Path | None = None, default: str | None = None, keep: list[str] | None = None,
                 decoding_rule: dict | None = None, names: dict[Path, str] | None = None) -> dict:
    entries: dict[str, dict] = {}
    candidates = evaluate_candidates(autoencoders, data, names) if autoencoders else []
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError("two autoencoder runs would be served by the same name (name one with RUN=NAME): " + ", ".join(sorted({n for n in names if names.count(n) > 1})))
    kept, kept_candidates = _reused(reuse, set(names) | ({COLORIZER} if colorizer is not None else set()), staging, keep)
    family = candidates + kept_candidates
    selection = None
    if family:
        if default is not None:
            chosen = next((c for c in family if c.name == default), None)
            if chosen is None:
                raise ValueError(f"--default {default}: not one of the autoencoders ({', '.join(c.name for c in family)})")
            rule = f"named on the command line (--default {default})"
        else:
            chosen, rule = choose(family), RULE
        selection = {"rule": rule, "chosen": chosen.row(), "candidates": [c.row() for c in family]}
        print(f"default autoencoder: {chosen.name} (test PSNR {chosen.psnr:.2f} dB vs PCA {chosen.pca_psnr:.2f} dB at "
              f"{chosen.latent_size} values: {chosen.margin:+.2f} dB) of a family of {len(family)}")
    for candidate in candidates:
        entries.update(export_autoencoder(candidate, staging, options, data))
    if colorizer is not None:
        entries[COLORIZER] = export_colorizer(colorizer, staging, options, data, decoding, decoding_rule)

    for key, facts in entries.items():
        if "gradient" in facts:  # the gradient's facts (and checksum) are part of its decoder's
            gradient = facts["gradient"]
            describe(staging / gradient["file"], {**gradient, "decoder": key}, doc=model_card.GRADIENT_DOC)
            gradient["sha256"], gradient["bytes"] = sha256(staging / gradient["file"]), (staging / gradient["file"]).stat().st_size
        path = staging / facts["file"]
        facts.update(io_description(path))
        describe(path, facts, doc=model_card.ROLE_DOCS[facts["role"]])
    for key, facts in entries.items():  # checksums after the metadata is in the files
        facts["sha256"] = sha256(staging / facts["file"])
        facts["bytes"] = (staging / facts["file"]).stat().st_size
    entries.update(kept)
    manifest = {
        "format": FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        "command": command,
        "selection": selection,
        "default_autoencoder": selection["chosen"]["name"] if selection else None,
        "models": entries,
    }
    write_manifest(staging, manifest)
    (staging / model_card.CARD).write_text(model_card.render(manifest))
    return manifest


def export_models(autoencoders: list[Path], colorizer: Path | None, out: Path, options: ExportOptions = ExportOptions(),
                  data: ImageArray | None = None, decoding: dict | None = None,
                  triton_dir: Path | None = None, command: str | None = None, reuse: Path | None = None,
                  default: str | None = None, keep: list[str] | None = None, decoding_rule: dict | None = None,
                  names: dict[Path, str] | None = None) -> dict:
    """Export every autoencoder given (the family; the default by the rule in export.choose unless named) and
    the colorizer, keeping what `reuse` (an earlier export) has and this one does not replace; returns the manifest.
    A member is served by its model's name, or by the one `names` gives its run folder (two runs of one network)."""
    if not autoencoders and colorizer is None and reuse is None:
        raise ValueError("nothing to export: give autoencoder run(s), a colorizer run, or both")
    out = Path(out)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = _export_into(staging, autoencoders, colorizer, options, data, decoding, command,
                                reuse and Path(reuse), default, keep, decoding_rule, names)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a failed or interrupted export leaves nothing behind
        raise
    # Replace the output folder only once everything passed, so a failed export leaves the old models intact.
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    if triton_dir is not None:
        triton.write_repository(out, manifest, Path(triton_dir))
    return manifest


def verify(models_dir: Path) -> dict:
    """Re-check a models folder against its manifest: the format known, every file present with its checksum."""
    manifest = read_manifest(models_dir)
    verify_files(models_dir, manifest)
    return manifest.facts
