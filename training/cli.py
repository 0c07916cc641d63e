"""The training stage's subcommands of `cae` (cae.cli dispatches). Only argparse at import: each command
imports torch and the rest when it runs, so `cae --help` is instant and works without the train extra.

    cae train      train one autoencoder (the study's first model by default)
    cae sweep      the study's 36-model sweep, resumable, with its table and figures
    cae lr-scan    the first model at several learning rates (the study's Fig. 1)
    cae train-colorizer   train a colorizer (the study's section III)
    cae color-report      score colorizers against the grayscale baseline; the study's Fig. 4-6
    cae figures    redraw a finished sweep's figures
    cae download   fetch the official CIFAR-10 archive (md5-verified, resumable)

Defaults come from the components (TrainConfig, the sweep's SWEEP_DEFAULTS, ColorizerConfig), so the
commands and the Python API train the same thing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import fields
from pathlib import Path

EXTRA = "train"  # what `pip install cae[...]` these commands need (cae.cli names it when a module is missing)

# --dry-run: every command in seconds, on synthetic data, with no downloads, writing to --out when given
# and otherwise to a new temporary folder, never to the default outputs (a dry run's checkpoint in
# runs/<model> would block the real run's resume; its sweep would overwrite the committed results/sweep).
DRY_RUN = {"data": "fake:256", "epochs": 1, "fraction": 1.0}
REPORT_OUT = "results/colorization"


def dry_run_folder(command: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=f"cae-{command}-dry-run-"))
    print(f"dry run: writing to {folder} (synthetic data, 1 epoch)")
    return folder


def _add_data_args(p: argparse.ArgumentParser, task_defaults: dict) -> None:
    from training.config import AUGMENTATIONS, LOSSES, OPTIMIZER_NAMES, TrainConfig

    d = {f.name: f.default for f in fields(TrainConfig)} | task_defaults  # the component's defaults, not the CLI's
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help="images: CIFAR-10 archive or folder, image folder, .tar/.tar.gz/.zip, "
                   "'fake[:N]' or 'cifar10' (download). Default: $CAE_DATA, else ../shared's CIFAR-10 copy, else cifar10")
    g.add_argument("--fraction", type=float, default=d["fraction"], help=f"share of each split to use (default {d['fraction']})")
    g.add_argument("--split-seed", type=int, default=d["split_seed"],
                   help=f"seed of the 80/10/10 train/validation/test split (default {d['split_seed']})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=d["epochs"], help=f"training epochs (default {d['epochs']})")
    g.add_argument("--batch-size", type=int, default=d["batch_size"], help=f"images per step (default {d['batch_size']})")
    g.add_argument("--lr", type=float, default=d["lr"], help=f"learning rate (default {d['lr']:g})")
    g.add_argument("--optimizer", default=d["optimizer"], choices=OPTIMIZER_NAMES, help=f"(default {d['optimizer']})")
    g.add_argument("--loss", default=d["loss"], choices=LOSSES,
                   help=f"reconstruction loss; psnr = each image's log MSE, averaged; colorizers: bce = the network's own "
                        f"loss, psnr = the output as served (default {d['loss']})")
    g.add_argument("--schedule", default=d["schedule"], choices=["constant", "cosine"],
                   help=f"learning rate schedule; cosine decays it to 0 over --epochs (default {d['schedule']})")
    g.add_argument("--seed", type=int, default=d["seed"], help=f"seed of weights and batch order (default {d['seed']})")
    g.add_argument("--augment", default=d["augment"], choices=AUGMENTATIONS,
                   help=f"random left-right flips, and shifts of up to 2 pixels (default {d['augment']})")
    g.add_argument("--ema", type=float, default=d["ema"], metavar="DECAY",
                   help=f"evaluate and keep an exponential moving average of the weights, e.g. 0.999; 0 = off (default {d['ema']:g})")
    g.add_argument("--init", default=d["init"], metavar="RUN",
                   help="start from the weights of this finished run of the same network (fine-tuning) instead of fresh ones")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default=d["device"], help=f"auto (CUDA when present), cpu or cuda[:N] (default {d['device']})")
    g.add_argument("--precision", default=d["precision"], choices=["auto", "fp32", "bf16"],
                   help=f"autocast precision; auto = bf16 where the hardware has it (default {d['precision']})")
    p.add_argument("--dry-run", action="store_true", help="seconds-long smoke run: 256 synthetic images, 1 epoch, into "
                   "--out if given, else a new temporary folder (the flags are checked as for a real run)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    # Unset flags take AutoencoderConfig's defaults (the study's first model) when the command runs.
    g = p.add_argument_group("model (default: the study's first model, cae_l5_ch2_k3_s2)")
    g.add_argument("--model", default=None, help="a configuration name, e.g. cae_l3_ch4_k5_s1, or a residual autoencoder such as "
                   "rae_w16_d3_z8_b1 (width, downsamplings, latent channels, blocks), or one that starts as PCA such as "
                   "pae_k128_w16_l3 (latent values per 32x32 tile, refiner width and levels; --loss psnr or mse); "
                   "overrides the axes below")
    g.add_argument("--fewer-layers", action="store_true", default=None, help="3 convolutions instead of 5")
    g.add_argument("--channel-factor", type=int, choices=[1, 2, 4], help="channels times 1, 2 or 4")
    g.add_argument("--kernel-size", type=int, help="odd kernel size")
    g.add_argument("--compression", type=int, help="pooling/upsampling factor")
    g.add_argument("--activation", choices=["relu", "sigmoid"], help="hidden activation")


def _given(args, names) -> dict:
    """The flags among `names` the user set (argparse default None: unset), for a component to fill in."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _train_config(args):
    from training.data import default_source
    from training.train import TrainConfig

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if args.dry_run:
        # The flags as given are checked first: a dry run must fail where the real run would.
        TrainConfig(**{**values, "data": values.get("data") or "fake"})
        values.update(DRY_RUN)
    values["data"] = values.get("data") or default_source()
    return TrainConfig(**values)


def _out(args, default: str, command: str) -> str | Path:
    if args.out:
        return args.out
    return dry_run_folder(command) if args.dry_run else default


def _model_config(args):
    from training.model import AutoencoderConfig, any_config_from_name

    if args.model:
        return any_config_from_name(args.model)
    return AutoencoderConfig(**_given(args, ("fewer_layers", "channel_factor", "kernel_size", "compression", "activation")))


def _train_and_report(args, model_config, what: str) -> int:
    from training.train import train

    config = _train_config(args)
    out = _out(args, f"runs/{model_config.name}", args.command)
    print(f"training {model_config.name} {what}on {config.data} -> {out}")
    result = train(model_config, config, out=out, progress=not args.quiet)
    print(json.dumps({"name": result["name"], "test": result["test"], "images_per_second": result["images_per_second"]}, indent=2))
    return 0


def cmd_train(args) -> int:
    model_config = _model_config(args)
    return _train_and_report(args, model_config, f"(latent {model_config.latent_size()}) ")


def cmd_sweep(args) -> int:
    from training.figures import sweep_figures
    from training.model import config_from_name, sweep_configs
    from training.sweep import sweep

    config = _train_config(args)
    configs = sweep_configs(activation=args.activation)
    if args.only:
        wanted = {config_from_name(n).name for n in args.only}
        configs = [c for c in configs if c.name in wanted] or [config_from_name(n) for n in args.only]
    args.out = _out(args, "results/sweep", "sweep")
    results = sweep(configs, config, out=args.out, workers=args.workers, progress=not args.quiet, backend=args.backend,
                    address=args.address, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial)
    print(f"{len(results)}/{len(configs)} trials finished; table: {Path(args.out) / 'results.md'}")
    if not args.no_figures and results:
        _report_figures(Path(args.out), sweep_figures(Path(args.out), results))
    return 0


def _report_figures(out: Path, figures: dict) -> None:
    if figures["fig3_skipped"]:
        print(f"figure: {out / 'fig2_latent_size.png'}; Fig. 3 not drawn: {figures['fig3_skipped']}")
    else:
        print(f"figures: {out / 'fig2_latent_size.png'}, {out / 'fig3_reconstructions.png'}")


def cmd_lr_scan(args) -> int:
    from training.figures import figure_learning_rates
    from training.model import FIRST_MODEL
    from training.train import train, with_overrides

    base = _train_config(args)
    out = Path(_out(args, "results/lr_scan", "lr-scan"))
    runs = {}
    for lr in args.lrs:
        runs[lr] = out / f"lr_{lr:g}"
        r = train(FIRST_MODEL, with_overrides(base, lr=lr), out=runs[lr], progress=not args.quiet)
        print(f"lr {lr:g}: test bce {r['test']['bce']:.4f}")
    figure_learning_rates(runs, out / "fig1_learning_rates.png")
    print(f"figure: {out / 'fig1_learning_rates.png'}")
    return 0


def cmd_train_colorizer(args) -> int:
    from training.colorize import ColorizerConfig

    model_config = ColorizerConfig(**_given(args, ("encoding", "arch", "width", "global_context", "cae", "temperature",
                                                   "prior_correction", "saturation")),
                                   **({"loss": args.color_loss} if args.color_loss else {}))
    return _train_and_report(args, model_config, "(colour images only) ")


def cmd_color_report(args) -> int:
    from training.color_report import report

    if args.dry_run:
        from training.colorize import ColorizerConfig
        from training.train import TrainConfig, train

        args.out = Path(args.out) if args.out != REPORT_OUT else dry_run_folder("color-report")
        run = args.out / "runs" / "colorizer"
        train(ColorizerConfig(width=4), TrainConfig(**DRY_RUN, batch_size=64), out=run, progress=False)
        args.runs, args.out = [run.parent], args.out / "report"
    runs = sorted(p.parent for folder in args.runs for p in Path(folder).glob("**/checkpoint.pt"))
    report(runs, Path(args.out), min_colourfulness=args.min_colourfulness)
    print(f"table: {Path(args.out) / 'results.md'}; figures in {args.out}")
    return 0


def cmd_figures(args) -> int:
    from training.figures import family_figure, sweep_figures
    from training.sweep import read_results

    if args.margins and not args.family:
        raise ValueError("--margins draws the family of --family MODELS: give both")
    if args.family:
        print(f"figure written: {family_figure(Path(args.sweep), Path(args.family))}")
        if args.margins:
            from training.figures import family_points, figure_family_margins

            figure_family_margins(family_points(Path(args.family)), Path(args.margins))
            print(f"figure written: {args.margins}")
        return 0
    results = read_results(Path(args.sweep))
    if not results:
        raise ValueError(f"{args.sweep}: no finished trials (results.jsonl)")
    _report_figures(Path(args.sweep), sweep_figures(Path(args.sweep), results))
    return 0


def cmd_download(args) -> int:
    from training.download import download

    path = download(args.url, args.dest, args.md5, progress=not args.quiet)
    print(path)
    return 0


def add_commands(sub) -> None:
    from training.config import SWEEP_DEFAULTS, TRAIN_DEFAULTS, TrainConfig
    from training.download import CIFAR10_MD5, CIFAR10_URL


    p = sub.add_parser("train", help="train one autoencoder", description="Train one autoencoder; rerun to resume.")
    _add_model_args(p)
    _add_data_args(p, TRAIN_DEFAULTS["reconstruction"])
    g = p.add_argument_group("refinement (the service's `refine`)")
    g.add_argument("--refine-steps", type=int, default=TrainConfig.refine_steps, metavar="N",
                   help="also train the decoder on each batch's latents refined N Adam steps against it, so that "
                        f"refining at serving time wins more (about N+1 times the cost per step; default {TrainConfig.refine_steps}: off)")
    g.add_argument("--refine-lr", type=float, default=TrainConfig.refine_lr, metavar="LR",
                   help=f"Adam's step size for that refinement (default {TrainConfig.refine_lr:g})")
    p.add_argument("--out", default=None, help="run folder (default runs/<model name>)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="the study's 36-model sweep", description="Train the sweep; rerun to resume.")
    _add_data_args(p, SWEEP_DEFAULTS)
    p.add_argument("--activation", default="relu", choices=["relu", "sigmoid"], help="hidden activation for all (default relu)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these configuration names")
    p.add_argument("--workers", type=int, default=1, help="local backend: trials in parallel, each in its own process (default 1)")
    p.add_argument("--backend", default="local", choices=["local", "ray"], help="where trials run (default local)")
    p.add_argument("--address", default=None, help="ray backend: cluster address, e.g. ray://head:10001 or auto "
                   "(default: $RAY_ADDRESS, else a Ray instance started for this sweep)")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="ray backend: CPUs reserved per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0, help="ray backend: GPUs per trial, fractions share one (default 0)")
    p.add_argument("--out", default=None, help="sweep folder (default results/sweep)")
    p.add_argument("--no-figures", action="store_true", help="skip Fig. 2 and Fig. 3")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("lr-scan", help="the first model at several learning rates (Fig. 1)")
    _add_data_args(p, SWEEP_DEFAULTS)
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2], help="learning rates")
    p.add_argument("--out", default=None, help="folder (default results/lr_scan)")
    p.set_defaults(func=cmd_lr_scan)

    p = sub.add_parser("train-colorizer", help="train a colorizer (gray in, colour out)",
                       description="Train a colorizer on the colour images of the split; rerun to resume.")
    # Unset flags take ColorizerConfig's defaults (a Lab-classification U-Net) when the command runs.
    g = p.add_argument_group("colorizer (default: ColorizerConfig's, the U-Net with Lab classification)")
    g.add_argument("--encoding", choices=["ycbcr", "ycbcr_centred", "ratio", "difference", "rgb", "lab"], help="colour encoding")
    g.add_argument("--arch", choices=["unet", "cae"], help="network")
    g.add_argument("--color-loss", choices=["classification", "l2"], help="classification over ab bins (lab only) or l2 regression")
    g.add_argument("--width", type=int, help="U-Net channels at full resolution")
    g.add_argument("--global-context", action="store_true", default=None,
                   help="U-Net: fuse the whole image's mean bottleneck features into every position")
    g.add_argument("--cae", help="autoencoder configuration for --arch cae (default: the sweep's best)")
    g.add_argument("--temperature", type=float, help="annealed-mean temperature")
    g.add_argument("--prior-correction", type=float, help="share of the rebalancing's pull to rare colours taken out at decoding")
    g.add_argument("--saturation", type=float, help="scale of ab's spread about the image's mean ab at decoding")
    g.add_argument("--min-colourfulness", type=float, default=0.0, metavar="SHARE",
                   help="with --loss psnr: keep each batch's colourfulness at least this share of the truth's, e.g. 0.82 (default off)")
    _add_data_args(p, TRAIN_DEFAULTS["colorization"])
    p.add_argument("--out", default=None, help="run folder (default runs/<colorizer name>)")
    p.set_defaults(func=cmd_train_colorizer)

    p = sub.add_parser("color-report", help="score colorizer runs against the grayscale baseline; Fig. 4-6")
    p.add_argument("--runs", nargs="+", default=["runs/colorization"], help="run folders or folders of them")
    p.add_argument("--out", default=REPORT_OUT, help=f"folder for the table and figures (default {REPORT_OUT})")
    # training.color_report.MIN_COLOURFULNESS, repeated so that `cae --help` imports no torch (a test keeps them equal).
    p.add_argument("--min-colourfulness", type=float, default=0.7, metavar="SHARE",
                   help="the decoding rule: the best validation PSNR among decodings at least this colourful, as a share of "
                        "the truth's colourfulness (default 0.7)")
    p.add_argument("--dry-run", action="store_true", help="train a tiny colorizer on synthetic data and report it, "
                   "all in --out if given, else in a new temporary folder")
    p.set_defaults(func=cmd_color_report)

    p = sub.add_parser("figures", help="redraw a sweep's figures")
    p.add_argument("--sweep", default="results/sweep", help="sweep folder (default results/sweep)")
    p.add_argument("--family", metavar="MODELS", help="redraw only Fig. 2, from the sweep's saved results and pca.json, "
                   "with the autoencoder family of this models folder (e.g. models)")
    p.add_argument("--margins", metavar="PNG", help="with --family: also draw each member's margin over PCA, plain and "
                   "refined, against the target, into this file")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("download", help="fetch the official CIFAR-10 python archive")
    p.add_argument("--url", default=CIFAR10_URL, help=f"(default {CIFAR10_URL})")
    p.add_argument("--md5", default=CIFAR10_MD5, help="expected md5 (default: the published one)")
    p.add_argument("--dest", default=None, help="folder or file (default ~/.cache/cae or $CAE_CACHE_DIR)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_download)
