"""How much better could an encoder be for a trained decoder? Optimise each image's latent against the
decoder (Adam on the per-image log-MSE, starting from the encoder's latent) and compare the PSNRs.

    python -m training.headroom runs/pae_flip/pae_k64_w16_l3 --images 256 --steps 100

The gap is an upper bound on what a better encoder alone can win for that decoder (training both
together can win more): 0.58-0.89 dB for the shipped pae members on validation. An encoder CNN grown
from a trained run (PCAAutoencoder.load_weights) did not find it in 10 CPU epochs; refining each latent
at encode time does (export/gradient.py, cae/refine.py, benchmarks/refine_latents.py), and
`cae train --refine-steps N` fine-tunes the decoder for the latents that refining finds (refine_latents
here is that step's refinement too).
"""

from __future__ import annotations

import argparse
import json

import torch

from cae.refine import LEARNING_RATE
from training.data import load_images
from training.metrics import per_image_mse, per_image_psnr
from training.run import Run
from training.step import SCHEDULES, set_lr, step_size


def differentiable_decode(model: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The model's image of latent `z` with a gradient at every pixel: a logits model's sigmoid, a pixel
    model's decoder without the eval-mode clamp (which would stop the gradient of pixels outside [0, 1])."""
    if getattr(model, "output_is_logits", False):
        return torch.sigmoid(model.decode_logits(z))
    return model.decoder(z)


def refine_latents(model: torch.nn.Module, images: torch.Tensor, z: torch.Tensor, steps: int, lr: float,
                   on_step=None, schedule: str = "constant") -> torch.Tensor:
    """`z` after `steps` Adam steps towards the latents whose decodings are closest to `images`, each image on
    its own log-MSE, as cae.refine does in the service; the model's weights get no gradient. `on_step(step, z)`
    sees the latents before each step; `schedule` is step_size's. Returns new, detached latents."""
    z = z.detach().float().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    for step in range(steps):
        if on_step is not None:
            on_step(step, z)
        set_lr(optimizer, step_size(lr, step, steps, schedule))
        loss = per_image_mse(differentiable_decode(model, z).float(), images).clamp_min(1e-10).log().sum()  # each image's own step
        (z.grad,) = torch.autograd.grad(loss, z)
        optimizer.step()
    return z.detach()


def latent_headroom(model: torch.nn.Module, images: torch.Tensor, steps: int = 100, lr: float = LEARNING_RATE,
                    report: tuple[int, ...] = (), restarts: int = 0, noise: float = 0.25, seed: int = 0,
                    schedule: str = "constant") -> dict:
    """Mean per-image PSNR of `model` on float images in [0, 1], with the encoder's latents and with
    latents optimised for `steps` Adam steps (and after each step count in `report`, to see what fewer
    would win); the model's weights do not change. With `restarts`, each image's latent is also optimised
    from that many other starts (the encoder's latent plus Gaussian noise of `noise` times the latents'
    spread) and the best of all starts is reported too: whether the optimum found is only a local one.
    `schedule` decays the step size over `steps` (step_size); the `report` gains are then mid-schedule."""
    model = model.eval().requires_grad_(False)
    with torch.no_grad():
        z = model.encode(images)
        encoder = per_image_psnr(model.decode(z), images).mean().item()
    start = z
    along = {}

    def record(step, z):
        if step in report:
            with torch.no_grad():
                along[step] = round(per_image_psnr(model.decode(z), images).mean().item() - encoder, 3)

    z = refine_latents(model, images, z, steps, lr, on_step=record, schedule=schedule)
    with torch.no_grad():
        best = per_image_psnr(model.decode(z), images)
    optimised = best.mean().item()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(restarts):
        noisy = start + noise * start.std() * torch.randn(start.shape, generator=generator).to(start)
        refined = refine_latents(model, images, noisy, steps, lr, schedule=schedule)
        with torch.no_grad():
            best = torch.maximum(best, per_image_psnr(model.decode(refined), images))
    return {"images": len(images), "steps": steps, "schedule": schedule, "encoder_psnr": round(encoder, 3),
            "optimised_psnr": round(optimised, 3), "headroom_db": round(optimised - encoder, 3),
            **({"headroom_db_after": along} if along else {}),
            **({"starts": restarts + 1, "noise": noise, "best_of_starts_psnr": round(best.mean().item(), 3),
                "best_of_starts_gain_db": round(best.mean().item() - optimised, 3)} if restarts else {})}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished autoencoder run folder (or its checkpoint.pt)")
    parser.add_argument("--images", type=int, default=256, help="the first N images of the split (default 256; 0 = all)")
    parser.add_argument("--split", choices=("val", "test"), default="val", help="the run's validation or test images "
                        "(default val: choose on validation, report on test)")
    parser.add_argument("--steps", type=int, default=100, help="Adam steps per latent (default 100)")
    parser.add_argument("--lr", type=float, default=LEARNING_RATE, help=f"Adam's step size (default {LEARNING_RATE:g}, the "
                        "service's own default; the manifest records each member's)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="constant", help="Adam's step size over the steps: "
                        "constant (the service's), or decayed to 0 along a half cosine or a line (default constant)")
    parser.add_argument("--report", default="10,25,50", help="also give the gain after these step counts (default 10,25,50)")
    parser.add_argument("--data", default=None, help="the run's images from elsewhere (default: where it trained)")
    parser.add_argument("--restarts", type=int, default=0, help="also optimise from this many noisy starts per image and "
                        "report the best of all (default 0)")
    parser.add_argument("--noise", type=float, default=0.25, help="the restarts' noise, times the latents' spread (default 0.25)")
    args = parser.parse_args(argv)
    report = tuple(int(n) for n in args.report.split(",") if n)
    run = Run.load(args.run)
    if run.kind != "reconstruction":
        parser.error(f"{args.run} holds a {run.kind} model, not an autoencoder")
    data = run.images(load_images(args.data) if args.data else None)
    chosen = getattr(run.split(data), args.split)[: args.images or None]
    images = torch.as_tensor(data.images[chosen]).float() / 255
    print(json.dumps({"run": str(run.folder), "model": run.name, "split": args.split, "lr": args.lr, **latent_headroom(run.model(), images, args.steps, lr=args.lr, report=report,
                                                                                            restarts=args.restarts, noise=args.noise, schedule=args.schedule)}))


if __name__ == "__main__":
    main()
