"""`cae`: the project's command line. Subcommands import what they need, so `cae --help` is instant.

    cae train      train one autoencoder (the study's first model by default)
    cae sweep      the study's 36-model sweep, resumable, with its table and figures
    cae lr-scan    the first model at several learning rates (the study's Fig. 1)
    cae train-colorizer   train a colorizer (the study's section III)
    cae color-report      score colorizers against the grayscale baseline; the study's Fig. 4-6
    cae figures    redraw a finished sweep's figures
    cae download   fetch the official CIFAR-10 archive (md5-verified, resumable)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

# --dry-run: every command in seconds, on synthetic data, with no downloads.
DRY_RUN = {"data": "fake:256", "epochs": 1, "fraction": 1.0}


def _add_data_args(p: argparse.ArgumentParser, fraction: float, epochs: int, batch_size: int = 256, lr: float = 2e-3) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help="images: CIFAR-10 archive or folder, image folder, .tar/.tar.gz/.zip, "
                   "'fake[:N]' or 'cifar10' (download). Default: $CAE_DATA, else ../shared's CIFAR-10 copy, else cifar10")
    g.add_argument("--fraction", type=float, default=fraction, help=f"share of each split to use (default {fraction})")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the 80/10/10 train/validation/test split (default 0)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"images per step (default {batch_size})")
    g.add_argument("--lr", type=float, default=lr, help=f"learning rate (default {lr:g})")
    g.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd", "rmsprop"], help="(default adam)")
    g.add_argument("--loss", default="bce", choices=["bce", "mse"], help="reconstruction loss (default bce)")
    g.add_argument("--schedule", default="constant", choices=["constant", "cosine"],
                   help="learning rate schedule; cosine decays it to 0 over --epochs (default constant)")
    g.add_argument("--seed", type=int, default=0, help="seed of weights and batch order (default 0)")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default auto)")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="autocast precision; auto = bf16 where the hardware has it (default auto)")
    p.add_argument("--dry-run", action="store_true", help="seconds-long smoke run: 256 synthetic images, 1 epoch")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (default: the study's first model, cae_l5_ch2_k3_s2)")
    g.add_argument("--model", default=None, help="a configuration name, e.g. cae_l3_ch4_k5_s1, or a residual autoencoder such as "
                   "rae_w16_d3_z8_b1 (width, downsamplings, latent channels, blocks; overrides the axes below)")
    g.add_argument("--fewer-layers", action="store_true", help="3 convolutions instead of 5")
    g.add_argument("--channel-factor", type=int, default=2, choices=[1, 2, 4], help="(default 2)")
    g.add_argument("--kernel-size", type=int, default=3, help="odd kernel size (default 3)")
    g.add_argument("--compression", type=int, default=2, help="pooling/upsampling factor (default 2)")
    g.add_argument("--activation", default="relu", choices=["relu", "sigmoid"], help="hidden activation (default relu)")


def _train_config(args):
    from training.data import default_source
    from training.train import TrainConfig

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if args.dry_run:
        values.update(DRY_RUN)
    values["data"] = values.get("data") or default_source()
    return TrainConfig(**values)


def _model_config(args):
    from training.model import AutoencoderConfig, any_config_from_name

    if args.model:
        return any_config_from_name(args.model)
    return AutoencoderConfig(fewer_layers=args.fewer_layers, channel_factor=args.channel_factor,
                             kernel_size=args.kernel_size, compression=args.compression, activation=args.activation)


def _train_and_report(args, model_config, what: str) -> int:
    from training.train import train

    config = _train_config(args)
    out = args.out or f"runs/{model_config.name}"
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
    results = sweep(configs, config, out=args.out, workers=args.workers, progress=not args.quiet, backend=args.backend,
                    address=args.address, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial)
    print(f"{len(results)}/{len(configs)} trials finished; table: {Path(args.out) / 'results.md'}")
    if not args.no_figures and results:
        sweep_figures(Path(args.out), results)
        print(f"figures: {Path(args.out) / 'fig2_latent_size.png'}, {Path(args.out) / 'fig3_reconstructions.png'}")
    return 0


def cmd_lr_scan(args) -> int:
    from training.figures import figure_learning_rates
    from training.model import FIRST_MODEL
    from training.train import train, with_overrides

    base = _train_config(args)
    out = Path(args.out)
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

    model_config = ColorizerConfig(encoding=args.encoding, arch=args.arch, loss=args.color_loss, width=args.width,
                                   cae=args.cae, temperature=args.temperature)
    return _train_and_report(args, model_config, "(colour images only) ")


def cmd_color_report(args) -> int:
    from training.color_report import report

    runs = sorted(p.parent for folder in args.runs for p in Path(folder).glob("**/checkpoint.pt"))
    report(runs, Path(args.out))
    print(f"table: {Path(args.out) / 'results.md'}; figures in {args.out}")
    return 0


def cmd_figures(args) -> int:
    from training.figures import sweep_figures
    from training.sweep import read_results

    results = read_results(Path(args.sweep))
    if not results:
        raise ValueError(f"{args.sweep}: no finished trials (results.jsonl)")
    sweep_figures(Path(args.sweep), results)
    print(f"figures written to {args.sweep}")
    return 0


def cmd_download(args) -> int:
    from training.download import download

    path = download(args.url, args.dest, args.md5, progress=not args.quiet)
    print(path)
    return 0


def cmd_export(args) -> int:
    from export.exporter import ExportOptions, export_models
    from training.data import load_images

    decoding = {}
    if args.decoding_from:
        chosen = json.loads(Path(args.decoding_from).read_text())["temperatures"][Path(args.colorizer).name]["chosen"]
        decoding = {"temperature": chosen["temperature"], "prior_correction": chosen["prior_correction"]}
    if args.temperature is not None:
        decoding["temperature"] = args.temperature
    if args.prior_correction is not None:
        decoding["prior_correction"] = args.prior_correction
    options = ExportOptions(exporter=args.exporter, opset=args.opset, tolerance=args.tolerance, version=args.version,
                            decoder_form=args.decoder_form)
    data = load_images(args.data) if args.data else None
    command = "cae " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("cae") else None
    manifest = export_models([Path(r) for r in args.autoencoder or []], Path(args.colorizer) if args.colorizer else None,
                             Path(args.out), options, data=data, triton_dir=Path(args.triton) if args.triton else None,
                             command=command, **decoding)
    for role, facts in manifest["models"].items():
        print(f"{Path(args.out) / facts['file']}: {facts['name']}, sha256 {facts['sha256'][:12]}, test " +
              ", ".join(f"{k} {v:.4g}" for k, v in facts["test"].items() if isinstance(v, float)))
    print(f"manifest: {Path(args.out) / 'manifest.json'}; model card: {Path(args.out) / 'MODEL_CARD.md'}")
    return 0


def cmd_serve(args) -> int:
    # The service never imports torch; neither does this command.
    from service.serve import serve

    serve(host=args.host, port=args.port, insecure=args.insecure, workers_log_level=args.log_level)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cae", description="Convolutional autoencoders: train, sweep, export, serve.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one autoencoder", description="Train one autoencoder; rerun to resume.")
    _add_model_args(p)
    _add_data_args(p, fraction=1.0, epochs=10)
    p.add_argument("--out", default=None, help="run folder (default runs/<model name>)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="the study's 36-model sweep", description="Train the sweep; rerun to resume.")
    # Keras' defaults (batch 32, Adam at 1e-3), as in the study: 10% of the data in batches of 256
    # would give only 160 steps in 10 epochs, too few for the smaller models to converge.
    _add_data_args(p, fraction=0.1, epochs=10, batch_size=32, lr=1e-3)
    p.add_argument("--activation", default="relu", choices=["relu", "sigmoid"], help="hidden activation for all (default relu)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these configuration names")
    p.add_argument("--workers", type=int, default=1, help="local backend: trials in parallel, each in its own process (default 1)")
    p.add_argument("--backend", default="local", choices=["local", "ray"], help="where trials run (default local)")
    p.add_argument("--address", default=None, help="ray backend: cluster address, e.g. ray://head:10001 or auto "
                   "(default: $RAY_ADDRESS, else a Ray instance started for this sweep)")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="ray backend: CPUs reserved per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0, help="ray backend: GPUs per trial, fractions share one (default 0)")
    p.add_argument("--out", default="results/sweep", help="sweep folder (default results/sweep)")
    p.add_argument("--no-figures", action="store_true", help="skip Fig. 2 and Fig. 3")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("lr-scan", help="the first model at several learning rates (Fig. 1)")
    _add_data_args(p, fraction=0.1, epochs=10, batch_size=32, lr=1e-3)
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2], help="learning rates")
    p.add_argument("--out", default="results/lr_scan", help="folder (default results/lr_scan)")
    p.set_defaults(func=cmd_lr_scan)

    p = sub.add_parser("train-colorizer", help="train a colorizer (gray in, colour out)",
                       description="Train a colorizer on the colour images of the split; rerun to resume.")
    g = p.add_argument_group("colorizer")
    g.add_argument("--encoding", default="lab", choices=["ycbcr", "ycbcr_centred", "ratio", "difference", "rgb", "lab"],
                   help="colour encoding (default lab)")
    g.add_argument("--arch", default="unet", choices=["unet", "cae"], help="network (default unet)")
    g.add_argument("--color-loss", default="classification", choices=["classification", "l2"],
                   help="classification over ab bins (lab only) or l2 regression (default classification)")
    g.add_argument("--width", type=int, default=32, help="U-Net channels at full resolution (default 32)")
    g.add_argument("--cae", default="cae_l5_ch4_k3_s1", help="autoencoder configuration for --arch cae (default: the sweep's best)")
    g.add_argument("--temperature", type=float, default=0.38, help="annealed-mean temperature (default 0.38)")
    _add_data_args(p, fraction=1.0, epochs=10, batch_size=64, lr=1e-3)
    p.add_argument("--out", default=None, help="run folder (default runs/<colorizer name>)")
    p.set_defaults(func=cmd_train_colorizer)

    p = sub.add_parser("color-report", help="score colorizer runs against the grayscale baseline; Fig. 4-6")
    p.add_argument("--runs", nargs="+", default=["runs/colorization"], help="run folders or folders of them")
    p.add_argument("--out", default="results/colorization", help="folder for the table and figures")
    p.set_defaults(func=cmd_color_report)

    p = sub.add_parser("figures", help="redraw a sweep's figures")
    p.add_argument("--sweep", default="results/sweep", help="sweep folder (default results/sweep)")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("export", help="checkpoints -> ONNX files, manifest and model card (the service's models/)",
                       description="Export the chosen autoencoder (of the candidates given, by the rule in export/choose.py) "
                                   "and a colorizer to ONNX; parity with PyTorch is checked and any mismatch fails the export.")
    p.add_argument("--autoencoder", nargs="+", metavar="RUN", help="autoencoder run folder(s) (`cae train`, a sweep's trials/<name>)")
    p.add_argument("--colorizer", metavar="RUN", help="colorizer run folder (`cae train-colorizer`)")
    p.add_argument("--out", default="models", help="output folder, replaced only when the export succeeds (default models)")
    p.add_argument("--exporter", default="dynamo", choices=["dynamo", "torchscript"], help="torch.onnx exporter (default dynamo)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |ONNX - PyTorch| allowed (default 1e-4)")
    p.add_argument("--decoder-form", default="layers", choices=["layers", "sub-pixel"],
                   help="decoder graph: the layers as they are, or upsample+conv as sub-pixel convolutions (the same "
                        "function; faster in onnxruntime for narrow models like the study's) (default layers)")
    p.add_argument("--version", type=int, default=1, help="model version recorded in the files (default 1)")
    p.add_argument("--temperature", type=float, default=None, help="colorizer decoding: annealed-mean temperature")
    p.add_argument("--prior-correction", type=float, default=None, help="colorizer decoding: prior correction")
    p.add_argument("--decoding-from", metavar="JSON", help="take the colorizer's decoding from a color-report results.json")
    p.add_argument("--data", default=None, help="images to evaluate on, if not the checkpoints' own data source")
    p.add_argument("--triton", metavar="DIR", help="also write a Triton model repository here")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="run the HTTP service (settings: CAE_* environment variables, see README)",
                       description="Serve models/ (or $CAE_MODEL_DIR) over HTTP with onnxruntime.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need CAE_API_KEY or --insecure)")
    p.add_argument("--port", type=int, default=8000, help="(default 8000)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback address without an API key")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)

    from training.download import CIFAR10_MD5, CIFAR10_URL

    p = sub.add_parser("download", help="fetch the official CIFAR-10 python archive")
    p.add_argument("--url", default=CIFAR10_URL, help=f"(default {CIFAR10_URL})")
    p.add_argument("--md5", default=CIFAR10_MD5, help="expected md5 (default: the published one)")
    p.add_argument("--dest", default=None, help="folder or file (default ~/.cache/cae or $CAE_CACHE_DIR)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from training.data import DatasetError

    try:
        return args.func(args)
    except (DatasetError, ValueError, FileNotFoundError) as e:
        print(f"cae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cae {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
