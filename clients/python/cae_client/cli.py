"""cae-client: the service from the shell.

    cae-client reconstruct in.png -o out.png
    cae-client colorize gray.jpg -o colour.png --size native
    cae-client encode in.png --json > latent.json      # the service's own /encode JSON
    cae-client decode latent.json -o out.png             # takes that, a curl'd /encode body, or one {shape, latent}
    cae-client reconstruct in.png -o out.png --model rae_w64_d1_z2_b1   # another autoencoder of the family
    cae-client reconstruct in.png -o out.png --refine 25  # each latent refined against the decoder first
    cae-client models

The service address and key come from --url/--api-key or CAE_URL/CAE_API_KEY.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cae_client import Client
from cae_client.errors import CaeError


MODEL_HELP = "which autoencoder of the service's family (`cae-client models` lists them; default: the service's default)"
REFINE_HELP = ("Adam steps refining each latent against the decoder (default 0: the encoder's latent); `cae-client models` "
               "says which autoencoders can and what each step count gained")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cae-client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("CAE_URL", "http://127.0.0.1:8000"), help="service URL (env CAE_URL)")
    parser.add_argument("--api-key", default=os.environ.get("CAE_API_KEY"), help="API key (env CAE_API_KEY)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("reconstruct", "colorize"):
        p = sub.add_parser(name, help=f"{name} images")
        p.add_argument("images", nargs="+", type=Path)
        p.add_argument("-o", "--output", type=Path, required=True, help="output file (one image) or folder (several)")
        p.add_argument("--size", default="native", choices=["native", "32"])
        p.add_argument("--format", default=None, choices=["png", "jpeg", "webp"], help="default: from the output suffix, else png")
        if name == "reconstruct":
            p.add_argument("--model", default=None, help=MODEL_HELP)
            p.add_argument("--refine", type=int, default=0, metavar="STEPS", help=REFINE_HELP)
    p = sub.add_parser("encode", help="latent vectors of images")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--refine", type=int, default=0, metavar="STEPS", help=REFINE_HELP)
    p.add_argument("--json", action="store_true", help="print the service's /encode JSON (what decode takes); default: a summary")
    p.add_argument("--size", default="32", choices=["native", "32"])
    p = sub.add_parser("decode", help="latents (JSON from encode) back to images")
    p.add_argument("latent", type=Path, help="JSON file (- for stdin): `encode --json`'s output or the service's /encode "
                   "response (one image per result), or one {\"shape\", \"latent\"} object or a list of them")
    p.add_argument("-o", "--output", type=Path, required=True, help="output file (one latent) or folder (several)")
    p.add_argument("--model", default=None, help="which autoencoder decodes (default: the one the JSON names, else the "
                   "service's default)")
    sub.add_parser("models", help="the models the service runs")
    sub.add_parser("ready", help="exit 0 when the service is ready")
    return parser


def _format_for(path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    return {".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}.get(path.suffix.lower(), "png")


def latents_from_json(body) -> list[dict]:
    """The latents in any JSON form the service or this client writes: /encode's {"results": [...]}, one
    {"shape", "latent"} (the /decode body), or a list of those; each keeps the autoencoder the JSON names."""
    items = body["results"] if isinstance(body, dict) and "results" in body else body if isinstance(body, list) else [body]
    if not items or not all(isinstance(z, dict) and "shape" in z and "latent" in z for z in items):
        raise ValueError("expected /encode's JSON ({\"results\": [...]}), or {\"shape\": [C, h, w], \"latent\": [...]} "
                         "objects")
    shared = body.get("model") if isinstance(body, dict) and "results" in body else None
    return [{"shape": z["shape"], "latent": z["latent"], **({"model": z.get("model", shared)} if z.get("model", shared) else {})}
            for z in items]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # `cae-client models | head`: the reader stopped reading; nothing is wrong. Python would report the
        # pipe again when flushing stdout at exit, so stdout goes to /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args) -> int:
    try:
        with Client(base_url=args.url, api_key=args.api_key, timeout=args.timeout) as client:
            if args.command in ("reconstruct", "colorize"):
                fmt = _format_for(args.output, args.format) if len(args.images) == 1 else (args.format or "png")
                method = getattr(client, f"{args.command}_batch")
                extra = {"model": args.model, "refine": args.refine} if args.command == "reconstruct" else {}
                results = method(args.images, size=args.size, format=fmt, **extra)
                if len(results) == 1:
                    results[0].image.save(args.output)
                    print(args.output)
                else:
                    args.output.mkdir(parents=True, exist_ok=True)
                    for src, r in zip(args.images, results):
                        out = args.output / f"{src.stem}.{fmt}"
                        r.image.save(out)
                        print(out)
            elif args.command == "encode":
                latents = client.encode_batch(args.images, size=args.size, model=args.model, refine=args.refine)
                if args.json:  # the same shape as the service's /encode response
                    print(json.dumps({"model": latents[0].model, "version": latents[0].version,
                                      **({"refine": latents[0].refine} if latents[0].refine else {}),
                                      "results": [z.to_json() for z in latents]}))
                else:
                    for src, z in zip(args.images, latents):
                        print(f"{src}: {z.model} v{z.version} latent {'x'.join(map(str, z.shape))} "
                              f"(mean {z.latent.mean():.4f}, std {z.latent.std():.4f})")
            elif args.command == "decode":
                text = sys.stdin.read() if str(args.latent) == "-" else args.latent.read_text()
                latents = latents_from_json(json.loads(text))
                if len(latents) == 1:
                    client.decode(latents[0], format=_format_for(args.output, None), model=args.model).image.save(args.output)
                    print(args.output)
                else:
                    args.output.mkdir(parents=True, exist_ok=True)
                    for i, result in enumerate(client.decode_batch(latents, format="png", model=args.model)):
                        out = args.output / f"latent_{i:03d}.png"
                        result.image.save(out)
                        print(out)
            elif args.command == "models":
                print(json.dumps(client.models(), indent=2))
            elif args.command == "ready":
                ok = client.ready()
                print("ready" if ok else "not ready")
                return 0 if ok else 1
    except CaeError as e:
        print(f"cae-client {args.command}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise  # handled in main, not an error
    except (OSError, ValueError, KeyError) as e:
        print(f"cae-client {args.command}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


