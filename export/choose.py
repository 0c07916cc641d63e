"""Which autoencoder ships: a rule, not a hand pick.

PCA with as many components as the autoencoder has latent values is the linear baseline. Among the
candidate runs whose latent (for a 32x32 image) has at most `MAX_LATENT` values and whose encoder and decoder
together cost at most `MAX_DEFAULT_MULTIPLY_ADDS` per pixel, the one whose test PSNR beats PCA's at its own latent
size by the most is the default. Ties go to the smaller latent. Both PSNRs are the
mean of per-image PSNR on the run's own test split, PCA fitted on the run's own training split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.data import ImageArray, load_images
from training.model import multiply_adds_per_pixel
from training.pca import PCA
from training.run import Run

MAX_LATENT = 1024
# The default serves photos, so it must answer the largest image the service accepts (4096 x 4096, 16.8
# megapixels) inside the 30 s inference deadline on the 2-core reference CPU: the width-16 members run
# 41,900 multiply-adds per pixel at 1.37 s per megapixel there, so 50,000 is ~1.6 s/MP, ~27 s at 16.8 MP. The
# wider members (400,000 and more) stay in the family, served by name, but cannot be the default.
MAX_DEFAULT_MULTIPLY_ADDS = 50_000
RULE = (f"the candidate (latent <= {MAX_LATENT} values for a 32x32 image, encoder and decoder together at most "
        f"{MAX_DEFAULT_MULTIPLY_ADDS:,} multiply-adds per pixel) whose test PSNR exceeds PCA's at the "
        "same number of components by the most; both are means of per-image PSNR on the run's test split")


@dataclass
class Candidate:
    run: Path
    name: str
    latent_size: int
    epochs: int
    fraction: float
    psnr: float
    pca_psnr: float
    multiply_adds: float  # per pixel, encoder and decoder together (training.model.multiply_adds_per_pixel)
    # The network's configuration name, where the member is served under another (`cae export --autoencoder RUN=NAME`).
    architecture: str | None = None

    @property
    def margin(self) -> float:
        return self.psnr - self.pca_psnr

    def row(self) -> dict:
        return {"run": str(self.run), "name": self.name, "latent_size": self.latent_size, "epochs": self.epochs,
                "fraction": self.fraction, "psnr": round(self.psnr, 3), "pca_psnr": round(self.pca_psnr, 3),
                "margin_db": round(self.margin, 3),
                "multiply_adds_per_pixel": round(self.multiply_adds),
                **({"architecture": self.architecture} if self.architecture not in (None, self.name) else {})}


class PCACurves:
    """PCA fitted once per (data, split), shared by the candidates trained on the same split."""

    def __init__(self, data: ImageArray | None = None):
        self.data, self._loaded, self._fits = data, {}, {}

    def images(self, source: str) -> ImageArray:
        """The override given to the constructor, else the run's own data source (loaded once)."""
        if self.data is not None:
            return self.data
        if source not in self._loaded:
            self._loaded[source] = load_images(source)
        return self._loaded[source]

    def psnr(self, run: Run, k: int) -> float:
        data = self.images(run.data.source)
        split = run.split(data)
        key = (data.checksum, split.seed, split.fraction)
        if key not in self._fits:
            self._fits[key] = PCA(data.images[split.train])
        return self._fits[key].evaluate(data.images[split.test], [k])[0]["psnr"]


def evaluate_candidates(runs: list[Path], data: ImageArray | None = None, names: dict[Path, str] | None = None) -> list[Candidate]:
    """Each run as a candidate member, named by its model name or by `names` (run folder -> member name)."""
    curves = PCACurves(data)
    names = {Path(run): name for run, name in (names or {}).items()}
    candidates = []
    for run in runs:
        loaded = Run.load(run)
        if loaded.kind != "reconstruction":
            raise ValueError(f"{run} is a {loaded.kind} run, not an autoencoder")
        if not loaded.finished:
            raise ValueError(f"{run} has not finished training (no test metrics yet)")
        k = loaded.model_config.latent_size(32, 32)
        candidates.append(Candidate(Path(run), names.get(Path(run), loaded.name), k, loaded.state.epoch, loaded.data.fraction,
                                    loaded.state.test["psnr"], curves.psnr(loaded, k), multiply_adds_per_pixel(loaded.name),
                                    architecture=loaded.name))
    return candidates


def choose(candidates: list[Candidate]) -> Candidate:
    if not candidates:
        raise ValueError("no autoencoder candidates given")
    eligible = [c for c in candidates if c.latent_size <= MAX_LATENT and c.multiply_adds <= MAX_DEFAULT_MULTIPLY_ADDS]
    if not eligible:
        raise ValueError(f"no candidate has a latent of at most {MAX_LATENT} values and at most "
                         f"{MAX_DEFAULT_MULTIPLY_ADDS:,} multiply-adds per pixel: "
                         + ", ".join(f"{c.name} ({c.latent_size} values, {c.multiply_adds:,.0f})" for c in candidates)
                         + "; name the default with --default")
    return max(eligible, key=lambda c: (c.margin, -c.latent_size))
