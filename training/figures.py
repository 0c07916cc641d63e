"""The study's figures, regenerated from run folders and the sweep's store.

Fig. 1: training error against iterations for several learning rates (the first model);
Fig. 2: test error against latent size for the sweep's models, with PCA at the same sizes;
Fig. 3: originals next to reconstructions for the first, worst and best configuration.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.data import load_images  # noqa: E402
from training.model import FIRST_MODEL  # noqa: E402
from training.pca import PCA  # noqa: E402
from training.run import CHECKPOINT, DataFacts, Run  # noqa: E402


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window or window <= 1:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def figure_learning_rates(runs: dict[float, Path], path: Path) -> None:
    """Fig. 1 from runs' steps.csv: BCE per iteration (moving average), one line per learning rate."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for lr, run in sorted(runs.items()):
        with open(Path(run) / "steps.csv") as f:
            losses = np.array([float(r["loss"]) for r in csv.DictReader(f)])
        smooth = _smooth(losses, max(1, len(losses) // 100))
        ax.plot(np.arange(len(smooth)) + (len(losses) - len(smooth)), smooth, label=f"lr {lr:g}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training BCE (moving average)")
    ax.set_title(f"Fig. 1: {FIRST_MODEL.name}, error by learning rate")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pca_baseline(results: list[dict], ks: list[int] | None = None) -> list[dict]:
    """PCA fitted on the sweep's own training images, evaluated on its test images, at latent sizes ks."""
    facts = DataFacts(**results[0]["data"])
    data = load_images(facts.source)
    split = facts.split(len(data))
    pca = PCA(data.images[split.train])
    ks = ks or sorted({2**i for i in range(3, 13)} | {r["latent_size"] for r in results if r["latent_size"] <= pca.max_components})
    return pca.evaluate(data.images[split.test], [k for k in ks if k <= pca.max_components])


def family_points(models_dir: Path) -> list[dict]:
    """The served autoencoder family of a models folder: name, latent size, test PSNR and PCA's at the same
    size (both on the full data's test split, as the export measured them), default or not."""
    from cae.manifest import read_manifest

    manifest = read_manifest(models_dir)

    def refined(ae) -> dict:
        # With its decoder's gradient graph: the test PSNR at the most refine steps the export measured.
        by_steps = ((ae.decoder.gradient or {}).get("test") or {}).get("psnr_by_steps") or {}
        most = max(by_steps, key=int, default=None)
        return {"refine_steps": int(most), "refined_psnr": by_steps[most]} if most else {}

    return sorted(({"name": name, "latent_size": ae.latent_size, "psnr": ae.encoder.facts["test"]["psnr"],
                    "pca_psnr": ae.encoder.facts["test"].get("pca_psnr"), "default": name == manifest.default_autoencoder,
                    **refined(ae)} for name, ae in manifest.autoencoders.items()), key=lambda p: p["latent_size"])


def by_size(family: list[dict]) -> dict[int, list[dict]]:
    """The family's members at each latent size, best test PSNR first (Fig. 2 labels each size once, in this order)."""
    sizes = sorted({p["latent_size"] for p in family})
    return {size: sorted((p for p in family if p["latent_size"] == size), key=lambda p: -p["psnr"]) for size in sizes}


def figure_latent_size(results: list[dict], pca_rows: list[dict], path: Path, family: list[dict] | None = None) -> None:
    """Fig. 2: test BCE and PSNR against latent size, the 36 models coloured by channel factor; with
    `family` (family_points), the served autoencoders and PCA at their sizes on the PSNR panel too."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    markers = {(False, 3): "o", (False, 5): "s", (True, 3): "^", (True, 5): "D"}
    colours = {1: "tab:blue", 2: "tab:orange", 4: "tab:green"}
    for ax, metric, label in ((axes[0], "bce", "test BCE (lower is better)"), (axes[1], "psnr", "test PSNR, dB (higher is better)")):
        for r in results:
            m = r["model"]
            ax.scatter(r["latent_size"], r["test"][metric], marker=markers[(m["fewer_layers"], m["kernel_size"])],
                       color=colours[m["channel_factor"]], s=36, edgecolor="black", linewidth=0.4, zorder=3)
        ax.plot([p["k"] for p in pca_rows], [p[metric] for p in pca_rows], "k--", lw=1.2, label="PCA, same latent size", zorder=2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("latent size (values per 32x32 image)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], ls="", marker="o", color=c, label=f"channel factor {f}") for f, c in colours.items()]
    handles += [plt.Line2D([], [], ls="", marker=mk, color="gray", label=f"{'3' if fl else '5'} convs, kernel {k}")
                for (fl, k), mk in markers.items()]
    fractions = {r["train"]["fraction"] for r in results}
    share = "full" if fractions == {1.0} else " / ".join(f"{f:.0%}" for f in sorted(fractions))
    handles += [plt.Line2D([], [], ls="--", color="k", label=f"PCA (the sweep's {share} split)")]
    top = max(r["test"]["psnr"] for r in results) + 8
    if family:
        ax = axes[1]
        at = by_size(family)
        sizes = sorted(at)
        # The line joins each size's best member; every member gets its star.
        ax.plot(sizes, [at[size][0]["psnr"] for size in sizes], "-", color="tab:red", lw=1, zorder=4)
        ax.plot([p["latent_size"] for p in family], [p["psnr"] for p in family], "*", color="tab:red", ms=13,
                markeredgecolor="black", markeredgewidth=0.5, zorder=4)
        with_pca = [p for p in family if p["pca_psnr"] is not None]
        pca_at = {p["latent_size"]: p["pca_psnr"] for p in with_pca}
        ax.plot(sorted(pca_at), [pca_at[k] for k in sorted(pca_at)], "x:", color="black", ms=8, zorder=4)
        for size in sizes:  # one block of names per size, best first, so that members close in PSNR do not overprint
            names = "\n".join(p["name"] + (" (default)" if p["default"] else "") for p in at[size])
            ax.annotate(names, (size, at[size][0]["psnr"]), fontsize=7, xytext=(6, -4), textcoords="offset points", va="top",
                        ma="left", zorder=6)
        handles += [plt.Line2D([], [], ls="-", marker="*", color="tab:red", ms=10, label="served family (full data's test split)"),
                    plt.Line2D([], [], ls=":", marker="x", color="k", label="PCA at the family's sizes (same split)")]
        refined = [p for p in family if "refined_psnr" in p]
        if refined:
            for p in refined:  # each member's plain point to its refined one
                ax.plot([p["latent_size"]] * 2, [p["psnr"], p["refined_psnr"]], color="tab:red", lw=0.8, zorder=4)
            ax.plot([p["latent_size"] for p in refined], [p["refined_psnr"] for p in refined], "*", ms=13, markerfacecolor="white",
                    markeredgecolor="tab:red", markeredgewidth=1.2, zorder=5)
            steps = sorted({p["refine_steps"] for p in refined})
            handles.append(plt.Line2D([], [], ls="", marker="*", ms=10, markerfacecolor="white", markeredgecolor="tab:red",
                                      label=f"refined latents (refine={'/'.join(map(str, steps))})"))
        target = with_pca
        if target:
            ax.plot([p["latent_size"] for p in target], [p["pca_psnr"] + 1.5 for p in target], "_", color="black", ms=14, mew=1.5, zorder=4)
            handles.append(plt.Line2D([], [], ls="", marker="_", color="k", ms=10, mew=1.5, label="target: PCA + 1.5 dB"))
        top = max(top, max(max(p["psnr"], p.get("refined_psnr", 0)) for p in family) + 3)
    # PCA on this JPEG-smoothed data reaches 45-55 dB at 1024-2048 components: let its curve leave the
    # panel rather than squash the models into its bottom fifth (the values are in pca.json).
    axes[1].set_ylim(top=top)
    if family:  # the family sits where the legend would go: put it beside the panel
        fig.set_size_inches(15, 4.5)
        axes[1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        axes[1].legend(handles=handles, fontsize=8, loc="upper left")
    fig.suptitle("Fig. 2: reconstruction error against latent size (sweep models and PCA"
                 + (", and the served family)" if family else ")"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def figure_reconstructions(runs: dict[str, Path], path: Path, count: int = 8) -> None:
    """Fig. 3: for each run, `count` test images (the same for all) over their reconstructions."""
    columns = []
    for title, run in runs.items():
        loaded = Run.load(run)
        data = loaded.images()
        idx = loaded.split(data).test[:count]
        x = torch.from_numpy(data.images[idx]).float() / 255
        y = loaded.model()(x)
        columns.append((f"{title}\n{loaded.name}", x, y))
    fig, axes = plt.subplots(count, 2 * len(columns), figsize=(2.0 * len(columns) * 1.3, count * 1.3))
    for c, (title, x, y) in enumerate(columns):
        for i in range(count):
            for j, img in enumerate((x[i], y[i])):
                ax = axes[i, 2 * c + j]
                ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
        axes[0, 2 * c].set_title(title, fontsize=8, loc="left")
    fig.suptitle("Fig. 3: originals (left of each pair) and reconstructions (right)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_family_margins(family: list[dict], path: Path, target_db: float = 1.5) -> None:
    """Each served autoencoder's test PSNR over PCA's at its latent size: plain (filled) and with refined
    latents (hollow, where it can refine), against the target margin; the differences Fig. 2's scale hides."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    kinds = sorted({p["name"].split("_")[0] for p in family})
    markers = dict(zip(kinds, "o^sD"))
    sizes = sorted({p["latent_size"] for p in family})
    # Side by side at each size, in kind then name order (two runs of one network may share a size).
    offset = {}
    for size in sizes:
        here = sorted((p["name"].split("_")[0], p["name"]) for p in family if p["latent_size"] == size)
        offset.update({name: (i - (len(here) - 1) / 2) * 0.06 for i, (_, name) in enumerate(here)})
    for p in family:
        if p["pca_psnr"] is None:
            continue
        kind = p["name"].split("_")[0]
        x = p["latent_size"] * 2 ** offset[p["name"]]
        plain = p["psnr"] - p["pca_psnr"]
        ax.plot(x, plain, markers[kind], color="tab:red" if p["default"] else "tab:blue", ms=8, mec="black", mew=0.5, zorder=3)
        if "refined_psnr" in p:
            refined = p["refined_psnr"] - p["pca_psnr"]
            ax.annotate("", (x, refined), (x, plain), arrowprops={"arrowstyle": "->", "color": "gray", "lw": 1}, zorder=2)
            ax.plot(x, refined, markers[kind], ms=9, mfc="white", mec="tab:green", mew=1.5, zorder=3)
        # Left of the size's middle, labels point left, else right: members level at one size stay readable.
        left = offset[p["name"]] <= 0
        ax.annotate(p["name"], (x, plain), fontsize=7, xytext=(-6 if left else 6, -3), textcoords="offset points",
                    ha="right" if left else "left")
    ax.axhline(target_db, color="black", ls="--", lw=1)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlim(sizes[0] / 2 ** 0.9, sizes[-1] * 2 ** 0.6)  # room for the labels on either side
    ax.set_xlabel("latent values per 32x32 image")
    ax.set_ylabel("test PSNR minus PCA's at the same size (dB)")
    ax.grid(alpha=0.3)
    steps = sorted({p["refine_steps"] for p in family if "refine_steps" in p})
    handles = [plt.Line2D([], [], ls="", marker=markers[k], color="tab:blue", mec="black", label=f"{k} member, encoder's latent")
               for k in kinds]
    handles += [plt.Line2D([], [], ls="", marker="o", color="tab:red", mec="black", label="the default")]
    if steps:
        handles += [plt.Line2D([], [], ls="", marker="o", mfc="white", mec="tab:green", mew=1.5,
                               label=f"refined latent (refine={'/'.join(map(str, steps))})")]
    handles += [plt.Line2D([], [], ls="--", color="black", label=f"target: PCA + {target_db:g} dB")]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.set_title("The served family against PCA (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def family_figure(sweep: Path, models_dir: Path) -> Path:
    """Fig. 2 of a finished sweep redrawn from its saved results and pca.json (no images needed), with the
    family of `models_dir` beside the study's 36 and PCA."""
    from training.sweep import read_results

    sweep = Path(sweep)
    results = read_results(sweep)
    if not results or not (sweep / "pca.json").is_file():
        raise ValueError(f"{sweep}: no finished sweep with a pca.json (run `cae sweep` first)")
    path = sweep / "fig2_latent_size.png"
    figure_latent_size(results, json.loads((sweep / "pca.json").read_text()), path, family_points(Path(models_dir)))
    return path


def sweep_figures(out: Path, results: list[dict]) -> dict:
    """Fig. 2 and Fig. 3 for a finished sweep in `out`; returns the PCA rows (also saved as pca.json)."""
    out = Path(out)
    pca_rows = pca_baseline(results)
    (out / "pca.json").write_text(json.dumps(pca_rows, indent=2))
    figure_latent_size(results, pca_rows, out / "fig2_latent_size.png")
    ranked = sorted(results, key=lambda r: r["test"]["bce"])
    picks = {"first": FIRST_MODEL.name, "worst": ranked[-1]["name"], "best": ranked[0]["name"]}
    # Fig. 3 needs the picked trials' weights; a sweep resumed from another machine's store (e.g. trials
    # trained on a GPU, only their results.jsonl lines brought back) may not have them here.
    missing = sorted({name for name in picks.values() if not (out / "trials" / name / CHECKPOINT).exists()})
    if not any(r["name"] == FIRST_MODEL.name for r in results):
        fig3_skipped = f"the first model ({FIRST_MODEL.name}) is not in this sweep"
    elif missing:
        fig3_skipped = f"no weights here for {', '.join(missing)} (their trials ran elsewhere; {out / 'trials'} lacks them)"
    else:
        fig3_skipped = None
        figure_reconstructions({k: out / "trials" / name for k, name in picks.items()}, out / "fig3_reconstructions.png")
    return {"pca": pca_rows, "picks": picks, "fig3_skipped": fig3_skipped}
