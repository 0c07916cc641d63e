"""training.figures: the served family in Fig. 2 and the margins figure, with two members at one latent size."""
from PIL import Image

from training.figures import by_size, figure_family_margins


def member(name, size, psnr, pca, default=False, refined=None):
    return {"name": name, "latent_size": size, "psnr": psnr, "pca_psnr": pca, "default": default,
            **({"refine_steps": 50, "refined_psnr": refined} if refined else {})}


# Two runs of one network at 64 values (one served for `refine`), level with a third member there.
FAMILY = [member("pae_k64", 64, 22.22, 21.62), member("pae_k64_refine", 64, 22.05, 21.62, refined=23.16),
          member("rae_z1", 64, 22.05, 21.62, refined=22.83), member("pae_k256", 256, 28.27, 27.27, default=True, refined=29.14)]


def test_each_size_lists_its_members_best_first():
    at = by_size(FAMILY)
    assert list(at) == [64, 256]
    assert [p["name"] for p in at[64]][0] == "pae_k64" and {p["name"] for p in at[64][1:]} == {"pae_k64_refine", "rae_z1"}
    assert [p["name"] for p in at[256]] == ["pae_k256"]


def test_the_margins_figure_draws_several_members_at_one_size(tmp_path):
    figure_family_margins(FAMILY, tmp_path / "margins.png")
    with Image.open(tmp_path / "margins.png") as im:
        assert im.size[0] > 300
