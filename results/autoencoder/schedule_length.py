"""Does a longer schedule pay for the PCA-started members? Validation PSNR per epoch of the shipped runs
against the same recipe run longer, from the metrics files committed beside this script.

    python results/autoencoder/schedule_length.py   # -> results/autoencoder/schedule_length.png
"""
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
# (panel title, [(label, metrics.csv)]): the shipped run first, the longer one second.
PANELS = [
    ("pae_k64_w16_l3 (64 values)", [("30 epochs (shipped)", HERE / "pae_k64_w16_l3/metrics.csv"),
                                     ("100 epochs", HERE / "pae_pilots/pae_k64_w16_l3_100ep.csv")]),
    ("pae_k256_w16_l3 (256 values)", [("40 epochs (shipped)", HERE / "pae_k256_w16_l3/metrics.csv"),
                                       ("80 epochs", HERE / "pae_pilots/pae_k256_w16_l3_80ep.csv")]),
]


def validation_psnr(path: Path) -> tuple[list[int], list[float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [int(r["epoch"]) for r in rows], [float(r["val_psnr"]) for r in rows]


def main(out: Path = HERE / "schedule_length.png") -> None:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.5 * len(PANELS), 4))
    for ax, (title, runs) in zip(axes, PANELS):
        for label, path in runs:
            epochs, psnr = validation_psnr(path)
            line, = ax.plot(epochs, psnr, label=f"{label}: {psnr[-1]:.2f} dB at the end")
            ax.axhline(psnr[-1], color=line.get_color(), linestyle=":", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("epoch (cosine schedule over the run's length)")
        ax.set_ylabel("validation PSNR (dB)")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle("The same recipe, longer: where each run ends")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
