import pytest
import torch

from training.augment import SHIFT, WeightAverage, augment, epoch_generator
from training.config import TrainConfig
from training.model import ResidualAutoencoderConfig
from training.train import CHECKPOINT, load_checkpoint, model_from_checkpoint, train

from tests.training.test_train import SMALL, straight_and_resumed


def batch(n=64, size=8):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_none_is_the_batch_itself():
    x = batch()
    assert augment(x, "none", epoch_generator(x.device, 0, 1)) is x


def test_flip_mirrors_about_half_the_images_and_nothing_else():
    x = batch(n=400)
    y = augment(x, "flip", epoch_generator(x.device, 0, 1))
    flipped = torch.tensor([torch.equal(a, b.flip(2)) for a, b in zip(y, x)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(y, x)])
    assert bool((flipped | kept).all())
    assert 150 < int(flipped.sum()) < 250


def test_flip_shift_moves_each_image_within_the_reflected_border():
    x = batch(n=200, size=12)
    y = augment(x, "flip-shift", epoch_generator(x.device, 0, 1))
    assert y.shape == x.shape
    padded = torch.nn.functional.pad(torch.cat([x, x.flip(3)]), (SHIFT,) * 4, mode="reflect")
    moved = 0
    for i, image in enumerate(y):
        # Each output is a 12x12 window of the padded image or of its mirror image.
        windows = [(j, dy, dx) for j in (i, i + len(x)) for dy in range(2 * SHIFT + 1) for dx in range(2 * SHIFT + 1)
                   if torch.equal(padded[j, :, dy:dy + 12, dx:dx + 12], image)]
        assert windows, f"image {i} is not a shifted (flipped) copy"
        moved += all((dy, dx) != (SHIFT, SHIFT) for _, dy, dx in windows)
    assert moved > 100  # most images move: 24 of the 25 offsets do


def test_the_same_seed_and_epoch_give_the_same_batch_and_another_epoch_another():
    x = batch()
    a = augment(x, "flip-shift", epoch_generator(x.device, 3, 2))
    assert torch.equal(a, augment(x, "flip-shift", epoch_generator(x.device, 3, 2)))
    assert not torch.equal(a, augment(x, "flip-shift", epoch_generator(x.device, 3, 5)))


def test_unknown_augmentation_and_ema_out_of_range_are_refused():
    with pytest.raises(ValueError, match="augment must be one of"):
        TrainConfig(augment="rotate")
    with pytest.raises(ValueError, match="ema must be in"):
        TrainConfig(ema=1.0)


def test_ema_averages_the_weights_it_is_given_with_a_warming_decay():
    model = torch.nn.Linear(2, 1)
    ema = WeightAverage(model, 0.9)
    with torch.no_grad():
        ema.update(model)  # the first update copies
        start = model.weight.clone()
        model.weight.add_(1.0)
        ema.update(model)  # decay min(0.9, 1/10): mostly the new weights
        assert torch.allclose(ema.module.weight, start + 0.9)
    resumed = WeightAverage(model, 0.9, weights=ema.module.state_dict(), updates=1001)
    with torch.no_grad():
        model.weight.add_(1.0)
        resumed.update(model)  # long warmed up: the full decay
    assert torch.allclose(resumed.module.weight, start + 0.9 + 0.1 * 1.1)


def test_ema_of_a_model_with_batchnorm_keeps_its_batch_count_and_warms_up_once_per_step():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = WeightAverage(model, 0.999)
    for _ in range(5):
        model(torch.rand(2, 3, 8, 8))  # training mode: the running statistics and the count move
        ema.update(model)
    assert int(ema.module[1].num_batches_tracked) == int(model[1].num_batches_tracked) == 5
    assert ema.updates == 5  # one warm-up step per update, whatever the number of dtype groups
    assert not torch.equal(ema.module[1].running_mean, model[1].running_mean)  # averaged


RAE = ResidualAutoencoderConfig(width=4, downsamplings=2, latent_channels=2)


def test_ema_run_ships_the_average_and_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    config = TrainConfig(**{**SMALL.__dict__, "epochs": 3, "loss": "mse", "ema": 0.9, "augment": "flip-shift"})
    straight, resumed = straight_and_resumed(RAE, config, tmp_path, monkeypatch)
    assert resumed["test"] == pytest.approx(straight["test"], rel=1e-6)
    ckpt = load_checkpoint(tmp_path / "crashed" / CHECKPOINT)
    shipped, trained = ckpt["model"], ckpt["train_model"]
    assert any(not torch.equal(shipped[k], trained[k]) for k in shipped)  # the average, not the last step
    # Export and reports read the shipped weights: they give the recorded test metrics.
    model = model_from_checkpoint(ckpt)
    assert all(torch.equal(v, shipped[k]) for k, v in model.state_dict().items())


def test_augmented_run_differs_from_the_plain_one(tmp_path):
    plain = train(RAE, TrainConfig(**{**SMALL.__dict__, "loss": "mse"}), out=tmp_path / "plain", progress=False)
    flipped = train(RAE, TrainConfig(**{**SMALL.__dict__, "loss": "mse", "augment": "flip"}), out=tmp_path / "flip", progress=False)
    assert plain["test"] != flipped["test"] and flipped["train"]["augment"] == "flip"
