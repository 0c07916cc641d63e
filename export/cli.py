"""The export stage's subcommand of `cae` (cae.cli dispatches): `cae export`. Only argparse at import."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXTRA = "export"  # what `pip install cae[...]` this command needs
MODELS_OUT = "models"  # the shipped models: a dry run never writes here
# The colorizer's decoding parameters (training.colorize.DECODING_PARAMETERS, not imported: torch-free CLI).
DECODING = ("temperature", "prior_correction", "saturation")


# The rule of color-report results.json files written before it recorded one (training.color_report.MIN_COLOURFULNESS then).
EARLIER_REPORTS_MIN_COLOURFULNESS = 0.7


def decoding_from(report: Path, colorizer: str | None) -> tuple[dict, dict]:
    """The decoding that `cae color-report` chose for the run `colorizer`, from its results.json, and how it chose:
    the report's file and the least colourfulness (share of the truth's) a decoding had to keep."""
    if colorizer is None:
        raise ValueError("--decoding-from sets the colorizer's decoding; give --colorizer too")
    try:
        facts = json.loads(report.read_text())
        chosen_by_run = {name: t["chosen"] for name, t in facts["temperatures"].items()}
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--decoding-from {report}: not a color-report results.json ({e!r})") from None
    name = Path(colorizer).name
    if name not in chosen_by_run:
        raise ValueError(f"--decoding-from {report}: no decoding chosen for run {name!r} "
                         f"(it has {', '.join(sorted(chosen_by_run)) or 'none'}); run `cae color-report --runs {colorizer}`")
    rule = {"report": str(report), "min_colourfulness": facts.get("min_colourfulness", EARLIER_REPORTS_MIN_COLOURFULNESS)}
    return {k: v for k, v in chosen_by_run[name].items() if k in DECODING}, rule


def step_counts(text: str) -> tuple[int, ...]:
    """`--refine-steps 10,25,50` -> (10, 25, 50): positive step counts, sorted, each once."""
    try:
        counts = {int(part) for part in text.split(",")}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give step counts separated by commas, e.g. 10,25,50") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: each step count must be at least 1")
    return tuple(sorted(counts))


def member(text: str) -> tuple[Path, str | None]:
    """--autoencoder RUN or RUN=NAME: a run folder, and the name its member is served by (default: its model's)."""
    from cae.manifest import valid_name

    run, sep, name = text.rpartition("=") if "=" in text else (text, "", "")
    if sep and not valid_name(name):
        raise argparse.ArgumentTypeError(f"{text!r}: a member name is letters, digits, _ and - (RUN=NAME)")
    return Path(run), name or None


def cmd_export(args) -> int:
    from training.cli import DRY_RUN, dry_run_folder

    if not args.autoencoder and not args.colorizer and not args.dry_run and not args.reuse:
        raise ValueError("nothing to export: give --autoencoder run(s), --colorizer, or both")
    if args.keep and not args.reuse:
        raise ValueError("--keep names models of --reuse DIR; give --reuse too")
    if args.reuse and not (Path(args.reuse) / "manifest.json").is_file():
        raise FileNotFoundError(f"--reuse {args.reuse}: no manifest.json (a models folder of `cae export`)")
    runs = [run for run, _ in args.autoencoder or []] + ([Path(args.colorizer)] if args.colorizer else [])
    for run in runs:  # checked before anything runs, dry run or not
        if not (run / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"{run}: no checkpoint.pt (a run folder of `cae train` or `cae train-colorizer`)")
    if args.decoding_from and not Path(args.decoding_from).is_file():
        raise FileNotFoundError(f"{args.decoding_from}: no such file (a color-report results.json)")

    from export.exporter import ExportOptions, export_models
    from training.data import load_images

    decoding, rule = {}, None
    if args.decoding_from:
        decoding, rule = decoding_from(Path(args.decoding_from), args.colorizer)
    for name in DECODING:
        if getattr(args, name) is not None:
            decoding[name] = getattr(args, name)
    options = ExportOptions(exporter=args.exporter, opset=args.opset, tolerance=args.tolerance, version=args.version,
                            decoder_form=args.decoder_form, gradient=not args.no_gradient,
                            refine_steps=args.refine_steps or ExportOptions.refine_steps)
    autoencoders, colorizer, out = [run for run, _ in args.autoencoder or []], args.colorizer and Path(args.colorizer), Path(args.out)
    names = {run: name for run, name in args.autoencoder or [] if name}
    data = load_images(args.data) if args.data else None
    triton_dir = Path(args.triton) if args.triton else None
    if args.dry_run:
        # The export path end to end on tiny models trained here on synthetic data, all in a temporary folder.
        from training.colorize import ColorizerConfig
        from training.model import ResidualAutoencoderConfig
        from training.train import TrainConfig, train

        folder = Path(args.out) if args.out != MODELS_OUT else dry_run_folder("export")
        config = TrainConfig(**DRY_RUN, batch_size=64)
        autoencoders, colorizer = [folder / "runs" / "autoencoder"], folder / "runs" / "colorizer"
        train(ResidualAutoencoderConfig(width=4, downsamplings=2, latent_channels=2), config, out=autoencoders[0], progress=False)
        train(ColorizerConfig(width=4), config, out=colorizer, progress=False)
        out, data, triton_dir = folder / "models", None, folder / "triton" if triton_dir else None
    command = "cae " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("cae") and not args.dry_run else None
    reuse = Path(args.reuse) if args.reuse and not args.dry_run else None
    manifest = export_models(autoencoders, colorizer, out, options, data=data, triton_dir=triton_dir, command=command,
                             reuse=reuse, default=args.default, keep=args.keep, decoding=decoding, decoding_rule=rule,
                             names=None if args.dry_run else names)
    for facts in manifest["models"].values():
        print(f"{out / facts['file']}: {facts['name']}, sha256 {facts['sha256'][:12]}, test " +
              ", ".join(f"{k} {v:.4g}" for k, v in facts["test"].items() if isinstance(v, float)))
    print(f"manifest: {out / 'manifest.json'}; model card: {out / 'MODEL_CARD.md'}")
    return 0


def cmd_recover(args) -> int:
    from export.recover import recover

    recover(args.paths, args.out, args.tolerance)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("export", help="checkpoints -> ONNX files, manifest and model card (the service's models/)",
                       description="Export a family of autoencoders (every run given; the default by the rule in "
                                   "export/choose.py) and a colorizer to ONNX; parity with PyTorch is checked and any mismatch "
                                   "fails the export.")
    p.add_argument("--autoencoder", nargs="+", metavar="RUN[=NAME]", type=member,
                   help="autoencoder run folder(s) (`cae train`, a sweep's trials/<name>): each becomes a member of the served "
                   "family, named by its model name, or by NAME (to serve two runs of one network side by side)")
    p.add_argument("--default", metavar="NAME", help="the default autoencoder (default: by the rule in export/choose.py)")
    p.add_argument("--reuse", metavar="DIR", help="an earlier export (e.g. models) whose models this one keeps unless it replaces "
                   "them: autoencoders of other names, and the colorizer when --colorizer is not given; files are checked and "
                   "copied unchanged (for models whose checkpoints are gone)")
    p.add_argument("--keep", nargs="+", metavar="NAME", help="with --reuse: keep only these (autoencoder names, colorizer)")
    p.add_argument("--colorizer", metavar="RUN", help="colorizer run folder (`cae train-colorizer`)")
    p.add_argument("--out", default=MODELS_OUT, help=f"output folder, replaced only when the export succeeds (default {MODELS_OUT})")
    p.add_argument("--exporter", default="dynamo", choices=["dynamo", "torchscript"], help="torch.onnx exporter (default dynamo)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |ONNX - PyTorch| allowed (default 1e-4)")
    p.add_argument("--decoder-form", default="layers", choices=["layers", "sub-pixel"],
                   help="decoder graph: the layers as they are, or upsample+conv as sub-pixel convolutions (the same "
                        "function; faster in onnxruntime for narrow models like the study's) (default layers)")
    p.add_argument("--no-gradient", action="store_true", help="skip the decoders' gradient graphs (no `refine` for "
                   "these members; saves ~10 min per member on 2 cores, most of it scoring refined test images)")
    p.add_argument("--refine-steps", type=step_counts, default=None, metavar="N,N,...",
                   help="refining step counts the test split is scored at, for each decoder's gradient graph; Adam's step "
                        "size is chosen on validation at the largest (default 10,25; scoring runs to the largest count, "
                        "about 30 s per step per member on 2 cores)")
    p.add_argument("--version", type=int, default=1, help="model version recorded in the files (default 1)")
    p.add_argument("--temperature", type=float, default=None, help="colorizer decoding: annealed-mean temperature")
    p.add_argument("--prior-correction", type=float, default=None, help="colorizer decoding: prior correction")
    p.add_argument("--saturation", type=float, default=None, help="colorizer decoding: scale of ab's spread about the "
                   "image's mean ab (1 = none)")
    p.add_argument("--decoding-from", metavar="JSON", help="take the colorizer's decoding from a color-report results.json")
    p.add_argument("--data", default=None, help="images to evaluate on, if not the checkpoints' own data source")
    p.add_argument("--triton", metavar="DIR", help="also write a Triton model repository here")
    p.add_argument("--dry-run", action="store_true", help="check the flags and run files given, then export two tiny "
                   "models trained on synthetic data, all into --out if given, else a new temporary folder (never models/)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("recover", help="exported autoencoder(s) -> training checkpoint(s), when the run folders are gone",
                       description="Rebuild a finished run (checkpoint.pt) from an exported member's ONNX files and manifest "
                                   "entry, checked against both files: to re-export it (e.g. with a gradient graph) or "
                                   "fine-tune from it (--init). The optimizer's state and the per-epoch history are not in "
                                   "the files and are not recovered.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a member's folder in an export (models/rae_w16_d2_z1_b1), "
                   "or an export folder (every autoencoder in it)")
    p.add_argument("--out", default="runs/recovered", help="where the run folders go (default runs/recovered)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |ONNX - PyTorch| allowed (default 1e-4)")
    p.set_defaults(func=cmd_recover)
