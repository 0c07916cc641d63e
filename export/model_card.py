"""MODEL_CARD.md, written from the manifest so its numbers are the ones measured at export."""

from __future__ import annotations

import re

from cae.images import LUMA

CARD = "MODEL_CARD.md"
_Y = "Y={:g}R+{:g}G+{:g}B".format(*LUMA)

ROLE_DOCS = {
    "encoder": "cae encoder: image float32 [N,3,H,W] RGB in [0,1] -> latent float32 [N,C,H/s,W/s]",
    "decoder": "cae decoder: latent float32 [N,C,h,w] -> image float32 [N,3,h*s,w*s] RGB in [0,1]",
    "colorizer": "cae colorizer: gray float32 [N,1,H,W] luma " + _Y + " in [0,1] -> image float32 [N,3,H,W] RGB in [0,1]",
}
GRADIENT_DOC = ("cae decoder gradient: latent float32 [N,C,h,w], image float32 [N,3,h*s,w*s] in [0,1] -> gradient float32 "
                "[N,C,h,w] of the sum over images of log(per-image MSE) of the decoded latent, mse float32 [N]")

LIMITS = """\
## Limits

- Trained on CIFAR-10 (32x32 photos of ten object classes), from a JPEG copy of its training images.
  Other content (faces, text, drawings, large photos) is out of distribution: expect blur and
  colours typical of CIFAR-10 (sky blue, grass green, browns).
- The graphs are fully convolutional and accept any H and W that are multiples of the stride, but they
  only ever saw 32x32 images: on a large photo each 32x32 neighbourhood is treated like a small image,
  and the colorizer's receptive field does not see the whole scene.
- The latent is a compact code for these images, not an embedding trained for similarity search;
  distances between latents reflect pixel similarity at best.
- The colorizer predicts plausible colours, not true ones: a red car may come out blue or brown. It
  cannot know the colour of anything; it is scored against the photo's real colours anyway.
"""


def _fmt(value, digits=2) -> str:
    """A table cell: floats rounded, a value not measured "-"."""
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _epochs(facts: dict) -> str:
    n = facts["checkpoint"]["epochs"]
    return f"{n} epoch" + ("" if n == 1 else "s")


def _wall_time(training: dict) -> str:
    """", 118 min of training on <hardware>", from what the run recorded (empty where it recorded nothing)."""
    seconds, hardware = training.get("train_seconds"), training.get("hardware")
    wall = f", {seconds / 60:.0f} min of training" if isinstance(seconds, (int, float)) else ""
    return wall + (f" on {' then '.join(hardware)}" if hardware else "")


def _io(facts: dict) -> str:
    def one(v):
        return f"`{v['name']}` {v['dtype']} [{', '.join(map(str, v['shape']))}]"

    return f"{one(facts['inputs'][0])} -> {one(facts['outputs'][0])}"


def _decoding_source(manifest: dict, facts: dict) -> str:
    """Where the decoding was chosen: the --decoding-from of the export that made the colorizer (an earlier
    one, where this export kept it)."""
    rule = facts.get("decoding_rule")
    if rule:  # exports since the rule was recorded
        return (f"chosen on validation images by `cae color-report`: `{rule['report']}`, the best PSNR among the decodings "
                f"keeping at least {rule['min_colourfulness']:.0%} of the true colourfulness")
    command = facts.get("reused_from", {}).get("command") or manifest.get("command") or ""
    found = re.search(r"--decoding-from (\S+)", command)
    return "chosen on validation images by `cae color-report`" + (f": `{found.group(1)}`" if found else "")


def _half(met: bool) -> str:
    return "this half met" if met else "missed"


def _decoding(d: dict) -> str:
    text = f"with the annealed mean at temperature {d['temperature']:g} and prior correction {d['prior_correction']:g}"
    if d.get("saturation", 1.0) != 1.0:  # exports before saturation existed have none
        text += f", then ab's spread about the image's mean ab scaled by {d['saturation']:g} (saturation)"
    return text


def _train_command(task: str, name: str, model: dict, t: dict) -> str:
    """The `cae` command that trained a run, from its model and training settings."""
    # Options away from their defaults (runs older than an option have no entry: its default then).
    extra = f" --schedule {t['schedule']}" if t.get("schedule", "constant") != "constant" else ""
    extra += f" --augment {t['augment']}" if t.get("augment", "none") != "none" else ""
    extra += f" --fraction {t['fraction']:g}" if t.get("fraction", 1.0) != 1.0 else ""
    if t.get("refine_steps"):
        extra += f" --refine-steps {t['refine_steps']} --refine-lr {t['refine_lr']:g}"
    init = f" --init {t['init']}" if t.get("init") else ""  # last: after the options, before epochs and rates
    if task == "colorization":
        network = f" --width {model['width']}" if model.get("width", 32) != 32 else ""
        network += " --global-context" if model.get("global_context") else ""
        for flag, key, default in (("temperature", "temperature", 0.38), ("prior-correction", "prior_correction", 0.0),
                                   ("saturation", "saturation", 1.0)):
            network += f" --{flag} {model[key]:g}" if model.get(key, default) != default else ""
        if t.get("loss") == "psnr":  # trained on its output as served
            extra += " --loss psnr" + (f" --min-colourfulness {t['min_colourfulness']:g}" if t.get("min_colourfulness") else "")
        return (f"cae train-colorizer --encoding {model['encoding']} --arch {model['arch']} --color-loss {model['loss']}{network}{extra}{init} "
                f"--epochs {t['epochs']} --batch-size {t['batch_size']} --lr {t['lr']:g}")
    return (f"cae train --model {name} --loss {t['loss']}{extra}{init} --epochs {t['epochs']} "
            f"--batch-size {t['batch_size']} --lr {t['lr']:g}")


def _lineage(training: dict) -> list[dict]:
    """The runs a model was fine-tuned from, first to last: each fine-tune's facts hold its --init run's, which
    hold theirs."""
    chain, init = [], training.get("init")
    while init:
        chain.append(init)
        init = init.get("init")
    return chain[::-1]


def _total_epochs(facts: dict) -> str:
    """A table cell: the epochs of every run the model went through, "35 (30+3+1+1)" where it was fine-tuned."""
    counts = [init["epochs"] for init in _lineage(facts["training"])] + [facts["checkpoint"]["epochs"]]
    return str(counts[0]) if len(counts) == 1 else f"{sum(counts)} ({'+'.join(map(str, counts))})"


def _trained_with(facts: dict, data: str = "") -> str:
    """"`command` (N epochs<data>, M min of training on X)", preceded by each run it was fine-tuned from
    (`data`, where the data is named, only on the last: a fine-tune starts from a run on the same split)."""
    training = facts["training"]
    steps = []
    for init in _lineage(training):
        n = init["epochs"]
        steps.append(f"`{_train_command(training['task'], init['name'], init['model'], init['train'])}` "
                     f"({n} epoch{'' if n == 1 else 's'}{_wall_time(init)}"
                     f"{'; its checkpoint rebuilt from an earlier export by `cae recover`' if init.get('recovered') else ''})")
    steps.append(f"`{_train_command(training['task'], facts['name'], training['model'], training['train'])}` "
                 f"({_epochs(facts)}{data}{_wall_time(training)})")
    return ", then fine-tuned with ".join(steps)


# The product's target for every autoencoder of the family (the models issue): PCA + this many dB.
TARGET_MARGIN_DB = 1.5
# ... and for the colorizer: at least the grayscale baseline + this many dB, and this share of the truth's colourfulness.
COLOUR_TARGET_DB, COLOUR_TARGET_RATIO = 0.5, 0.8


def _family_section(manifest: dict) -> list[str]:
    models = manifest["models"]
    members = [f for f in models.values() if f["role"] == "encoder"]
    if not members:
        return []
    default = manifest.get("default_autoencoder")
    members.sort(key=lambda f: f["latent_size_32x32"])
    lines = ["## Reconstruction: the autoencoder family", "",
             "Convolutional autoencoders at several latent sizes: a 32x32 image becomes that many latent values, and back. Each is",
             "served by name (`model=` on /encode, /decode and /reconstruct; V2 models `<name>.encoder` and `<name>.decoder`);",
             f"the default is **{default}** (`encoder` and `decoder` in V2).", "",
             f"Scored against PCA with as many components as latent values (the linear baseline; fitted on the training split); "
             f"the product's target is PCA + {TARGET_MARGIN_DB} dB.", "",
             "| autoencoder | latent values (32x32) | latent shape | parameters | multiply-adds per pixel | epochs | test PSNR (dB) | PCA (dB) | margin (dB) | SSIM | target |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    # The cost the default rule weighs (export/choose.py), from the selection's rows.
    cost = {row["name"]: row.get("multiply_adds_per_pixel") for row in (manifest.get("selection") or {}).get("candidates", [])}
    for f in members:
        test, name = f["test"], f["autoencoder"]
        decoder = models.get(f"{name}.decoder", {})
        params = f["parameters"] + decoder.get("parameters", 0)
        shape = f"{f['latent_channels']} x {32 // f['stride']} x {32 // f['stride']}"
        margin = test["psnr"] - test["pca_psnr"] if "pca_psnr" in test else None
        verdict = "-" if margin is None else ("met" if margin >= TARGET_MARGIN_DB else f"**missed by {TARGET_MARGIN_DB - margin:.2f} dB**")
        lines.append(f"| {name}{' (default)' if name == default else ''} | {f['latent_size_32x32']} | {shape} | {params:,} | "
                     f"{'-' if cost.get(name) is None else f'{cost[name]:,}'} | {_total_epochs(f)} | {test['psnr']:.2f} | {_fmt(test.get('pca_psnr'))} | "
                     f"{'-' if margin is None else f'{margin:+.2f}'} | {_fmt(test.get('ssim'), 3)} | {verdict} |")
    lines += _refined_section(members, models)
    lines += ["", "Trained with:", ""]
    for f in members:
        origin = f" (kept from an earlier export: {f['reused_from']['folder']}, {f['reused_from']['created']})" if f.get("reused_from") else ""
        training = f["training"]
        if training.get("recovered"):
            gone = training["recovered"].get("checkpoint", {}).get("path")
            origin += (f"; rebuilt from the files of an earlier export (`{training['recovered']['from']['encoder']['file']}` and its decoder) "
                       f"by `cae recover`{f', its checkpoint `{gone}` being gone' if gone else ''}")
        data = f" on {f['data']['sizes']['train']:,} training images of `{f['data']['source']}`, split seed {f['data']['split_seed']}"
        lines.append(f"- {f['autoencoder']}: {_trained_with(f, data)}{origin}")
    lines.append("")
    sel = manifest.get("selection")
    if sel:
        lines += [f"Default chosen by rule: {sel['rule']}.", ""]
    return lines + _family_gap(members) + _refined_gap(members, models)


def _refined_gap(members: list[dict], models: dict) -> list[str]:
    """How the family stands against the target with refined latents, where members can refine."""
    margins = {}
    for f in members:
        g = _refined(f, models)
        by_steps = (g or {}).get("test", {}).get("psnr_by_steps") or {}
        if by_steps and f["test"].get("pca_psnr") is not None:
            most = max(by_steps, key=int)
            margins[f["autoencoder"]] = (int(most), by_steps[most] - f["test"]["pca_psnr"])
    if not margins:
        return []
    met = sorted(n for n, (_, m) in margins.items() if m >= TARGET_MARGIN_DB)
    short = {n: TARGET_MARGIN_DB - m for n, (_, m) in margins.items() if m < TARGET_MARGIN_DB}
    steps = "/".join(str(t) for t in sorted({t for t, _ in margins.values()}))
    return [f"**With refined latents** (`refine={steps}`, the table above), {len(met)} of the {len(margins)} members that can "
            f"refine meet the target" + (f" ({', '.join(met)})" if met else "")
            + ("; " + ", ".join(f"{n} is short by {gap:.2f} dB" for n, gap in sorted(short.items())) if short else "")
            + ". Members exported without their decoder's gradient graph (their checkpoints gone) cannot refine.", ""]


def _refined(f: dict, models: dict) -> dict | None:
    """A member's gradient facts (from its decoder's entry), if it was exported with one."""
    return models.get(f"{f['autoencoder']}.decoder", {}).get("gradient")


def _refined_section(members: list[dict], models: dict) -> list[str]:
    able = [(f, _refined(f, models)) for f in members if _refined(f, models)]
    if not able:
        return []
    steps = sorted({int(t) for _, g in able for t in g["test"]["psnr_by_steps"]})
    lines = ["", "### Refined latents (`refine=<steps>`)", "",
             "The encoder's latent is a first guess: refining it with Adam against the decoder (its gradient graph, "
             "`<name>/gradient.onnx`, exported beside it and checked against autograd) reconstructs closer. The service does it "
             "when asked (`refine=<steps>` on /encode and /reconstruct); each step costs about a decoder's forward and backward "
             "pass. Adam's step size was chosen on validation; PSNR on the test split:", "",
             "| autoencoder | Adam step size | " + " | ".join(["0 steps"] + [f"{t} steps" for t in steps])
             + " | margin over PCA at the most steps measured (dB) | target |",
             "|---|---|" + "---|" * (len(steps) + 3)]
    for f, g in able:
        by_steps = g["test"]["psnr_by_steps"]
        pca = f["test"].get("pca_psnr")
        # Each member at the most steps its own export measured (`cae export --refine-steps`), as _refined_gap does.
        most = max(by_steps, key=int)
        margin = by_steps[most] - pca if pca is not None else None
        verdict = "-" if margin is None else ("met" if margin >= TARGET_MARGIN_DB else f"**missed by {TARGET_MARGIN_DB - margin:.2f} dB**")
        lines.append(f"| {f['autoencoder']} | {g['lr']:g} | {g['test']['psnr']:.2f} | "
                     + " | ".join(_fmt(by_steps.get(str(t))) for t in steps)
                     + f" | {'-' if margin is None else f'{margin:+.2f}'}{'' if int(most) == steps[-1] else f' (at {most})'} | {verdict} |")
    return lines


def _family_gap(members: list[dict]) -> list[str]:
    """Where members miss the target: by how much, and what was tried (the models issue asks for both)."""
    short = {f["autoencoder"]: TARGET_MARGIN_DB - (f["test"]["psnr"] - f["test"]["pca_psnr"])
             for f in members if "pca_psnr" in f["test"]}
    short = {name: gap for name, gap in short.items() if gap > 0}
    if not short:
        return []
    best = {}  # the smallest gap at each latent size: what the family as a whole still lacks there
    for f in members:
        if f["autoencoder"] in short:
            size = f["latent_size_32x32"]
            best[size] = min(best.get(size, float("inf")), short[f["autoencoder"]])
    return [f"**Target missed** with the encoder's own latents by {len(short)} of {len(members)} members; the best member at each size is short by "
            + ", ".join(f"{gap:.2f} dB at {size}" for size, gap in sorted(best.items()))
            + ". Tried in this project (results/autoencoder/README.md, \"What was tried\"): the study's network (below PCA "
            "at every size); residual autoencoders with widths 16-64, several grids, MSE and psnr losses, EMA and flips, "
            "100 GPU epochs (+0.21 to +0.79 dB); autoencoders that start as PCA (pae), 30-40 CPU epochs with flips "
            "(+0.60 to +1.01 dB), with pilots of an encoder CNN (also grown from a trained member), a deeper and a wider "
            "refiner, and longer schedules (80 epochs at 256 values, 100 at 64); refining each latent against the "
            "decoder (served as `refine=<steps>`, "
            "the table above), which the plain margins do not include, and decoders fine-tuned on the latents refining "
            "finds (more PSNR refined for a little less plain). Not yet tried: the pae recipe for 100 epochs at 128 and "
            "512 values, and wider pae networks trained long enough to use their width (a GPU's work).", ""]


def render(manifest: dict) -> str:
    models = manifest["models"]
    lines = ["# Model card: cae's shipped models", "",
             "Generated by `cae export` from `manifest.json` (same folder); every number below was measured by the",
             "export itself on the exported ONNX files with onnxruntime, on the project's test split (10% of the",
             "data, never used for training or model choice).", ""]
    if manifest.get("command"):
        lines += ["Produced by:", "", "```", manifest["command"], "```", ""]
    lines += ["| file | what it is for | tensors | stride | parameters | sha256 (first 12) |", "|---|---|---|---|---|---|"]
    for key, f in models.items():
        lines.append(f"| `{f['file']}` | {f['name']} ({f['role']}) | {_io(f)} | {f['stride']} | {f['parameters']:,} | `{f['sha256'][:12]}` |")
        if f.get("gradient"):
            g = f["gradient"]
            lines.append(f"| `{g['file']}` | {f['name']} (the decoder's gradient, for `refine`) | latent, image -> gradient, mse | "
                         f"{f['stride']} | (the decoder's) | `{g['sha256'][:12]}` |")
    lines.append("")

    lines += _family_section(manifest)

    if "colorizer" in models:
        f = models["colorizer"]
        test, base = f["test"], f["test"]["grayscale_baseline"]
        gap = test["psnr"] - base["psnr"]
        met = gap >= COLOUR_TARGET_DB and test["colourfulness_ratio"] >= COLOUR_TARGET_RATIO
        lines += ["## Colorization", "",
                  f"{f['name']}: predicts colour from luma Y. Lab ab is quantised into bins and predicted as a distribution per pixel",
                  "(Zhang et al. 2016), decoded inside the graph"
                  + (f" {_decoding(f['decoding'])} ({_decoding_source(manifest, f)})" if f.get("decoding") else "")
                  + ("; the output then gets the input's luma back, its predicted chroma (Cb, Cr) kept, as the service does for photos."
                     if f.get("keeps_input_luma") else "."), "",
                  f"Trained with {_trained_with(f)}"
                  + (f"; kept from an earlier export ({f['reused_from']['folder']}, {f['reused_from']['created']})." if f.get("reused_from") else "."), "",
                  f"Scored on the {test['images']:,} test images in colour ({test['grayscale_images_left_out']} grayscale test images left out: "
                  "on them the baseline is perfect and a colorizer can only lose).", "",
                  "| | PSNR (dB) | SSIM | colourfulness (share of the truth's) |", "|---|---|---|---|",
                  f"| colorizer | {test['psnr']:.2f} | {test['ssim']:.3f} | {test['colourfulness_ratio']:.0%} |",
                  f"| grayscale baseline (output Y unchanged) | {base['psnr']:.2f} | {base['ssim']:.3f} | {base['colourfulness_ratio']:.0%} |", "",
                  f"Target (models issue): PSNR at least the grayscale baseline + {COLOUR_TARGET_DB} dB and colourfulness at least "
                  f"{COLOUR_TARGET_RATIO:.0%} of the truth's: "
                  + (f"met: PSNR {gap:+.2f} dB against the baseline at {test['colourfulness_ratio']:.1%} colourfulness." if met else f"**not met**: PSNR {gap:+.2f} dB against the baseline ({_half(gap >= COLOUR_TARGET_DB)}), "
                     f"colourfulness {test['colourfulness_ratio']:.1%} ({_half(test['colourfulness_ratio'] >= COLOUR_TARGET_RATIO)}). "
                     "Tried in this project (results/colorization/results.md): L2 regression (YCbCr, ratio, difference, Lab; study network and U-Net) stays near the baseline at 34-47% "
                     "colourfulness; classification with rebalancing is vivid (115%) but loses 1.9 dB; the decoding scan trades one for "
                     "the other; 16 epochs with a cosine schedule instead of 5 at a constant rate moved that trade by about +0.2 dB at "
                     "the same colourfulness (results/colorization/cos16/results.md), with validation loss flat after epoch 10; flips did not help in a pilot; "
                     "a global-context fusion layer (Iizuka et al.) lowered validation loss by 0.03 and moved the trade by about +0.1 dB more "
                     "(results/colorization/cos16g/), though not at 80% colourfulness; saturating the decoded colours about each image's mean "
                     "colour (to first order the least-error way to add colourfulness) moved it by +0.05 to +0.15 dB more on validation "
                     "(results/colorization/cos16g_sat/); a width-64 U-Net with that layer, 12 epochs, lowered validation loss by 0.03 more "
                     "(3.556 against 3.586) and moved the trade by about +0.1 dB more (results/colorization/cos12w64g/); the best decoding at "
                     "80% colourfulness still scores only +0.28 dB on test (results/colorization/cos12w64g/rule80.md). The decoding is chosen "
                     "with the network fed luma Y, as served: chosen on Lab L instead, the same colorizer kept 67.8% colourfulness on test. "
                     "Then the output was given back the input's luma (+0.06 dB at the same colourfulness, results/colorization/keep_luma/), "
                     "and the width-64 U-Net trained 24 epochs with flips instead of 12 (validation loss 3.548 against 3.556; "
                     "results/colorization/cos24w64gf/): its best decoding at 80% on validation scores 25.20 dB at 81.0% on test, +0.26 dB (results/colorization/cos24w64gf/rule80.md)."), ""]

    lines += ["## Parity with PyTorch", "",
              "Max |ONNX - PyTorch| per check (random and real images, at 32x32 and a larger size):", ""]
    for f in models.values():
        lines.append(f"- `{f['file']}`: " + ", ".join(f"{k} {v:.1e}" for k, v in f["parity"].items()))
    for f in models.values():
        if f.get("gradient"):
            lines.append(f"- `{f['gradient']['file']}` (relative to the largest autograd gradient): "
                         + ", ".join(f"{k} {v:.1e}" for k, v in f["gradient"]["parity"].items()))
    lines += ["", f"Exporter `{next(iter(models.values()))['exporter']}`, opset {next(iter(models.values()))['opset']}; "
              f"torch {manifest['versions']['torch']}, onnx {manifest['versions']['onnx']}, onnxruntime {manifest['versions']['onnxruntime']}.", "",
              LIMITS]
    return "\n".join(lines)
