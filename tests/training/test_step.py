"""training.step: the per-device step plan, the state a CUDA graph's warm-up must not change, the learning
rate a captured step reads. Capture itself needs a GPU: that test runs only where CUDA is."""

import copy

import pytest
import torch

from training.colorize import ColorizerConfig
from training.config import TrainConfig
from training.model import FIRST_MODEL, ConvAutoencoder
from training.step import StepPlan, TrainingState, set_lr
from training.train import ReconstructionTask, make_optimizer, portable_optimizer_state, train, train_step


def test_each_device_gets_its_forms():
    cpu = StepPlan.for_device(torch.device("cpu"))
    assert cpu.channels_last and cpu.subpixel_decoder and not cpu.cuda_graph
    cuda = StepPlan.for_device(torch.device("cuda"))
    assert not cuda.channels_last and not cuda.subpixel_decoder and cuda.cuda_graph
    assert not StepPlan.for_device(torch.device("cuda"), "rmsprop").cuda_graph  # no capturable fused form


def test_both_decoder_forms_compute_the_same_function():
    model = ConvAutoencoder(FIRST_MODEL).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        subpixel = model(x)
        model.subpixel_decoder = False
        layers = model(x)
    torch.testing.assert_close(subpixel, layers, atol=1e-5, rtol=1e-5)


def _steps(model, optimizer, xs):
    task = ReconstructionTask(FIRST_MODEL, "bce")
    for x in xs:
        train_step(task, model, optimizer, x, torch.float32)


@pytest.mark.parametrize("optimizer_name", ["adam", "sgd"])
def test_warm_up_steps_leave_no_trace(optimizer_name):
    torch.manual_seed(0)
    model = ConvAutoencoder(FIRST_MODEL)
    reference = copy.deepcopy(model)
    optimizer, ref_optimizer = make_optimizer(optimizer_name, model, 1e-2), make_optimizer(optimizer_name, reference, 1e-2)
    xs = [torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    for resumed in (False, True):  # before any step (state created by the warm-up) and mid-run (state restored)
        state = TrainingState(model, optimizer)
        _steps(model, optimizer, xs)  # what a graph's warm-up does
        state.restore()
        _steps(model, optimizer, xs[:2])
        _steps(reference, ref_optimizer, xs[:2])
        for p, q in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_batchnorm_statistics_are_restored_too():
    from training.colorize import Colorizer

    model = Colorizer(ColorizerConfig(width=4, loss="l2"), None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = make_optimizer("adam", model, 1e-2)
    state = TrainingState(model, optimizer)
    model(torch.rand(4, 1, 32, 32)).mean().backward()
    optimizer.step()
    state.restore()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_tensor_learning_rate_is_set_in_place_and_saved_as_a_number():
    model = ConvAutoencoder(FIRST_MODEL)
    lr = torch.tensor(1e-3)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, foreach=False)
    set_lr(optimizer, 5e-4)
    assert optimizer.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(5e-4)
    _steps(model, optimizer, [torch.rand(2, 3, 32, 32)])
    saved = portable_optimizer_state(optimizer)
    assert saved["param_groups"][0]["lr"] == pytest.approx(5e-4) and not isinstance(saved["param_groups"][0]["lr"], torch.Tensor)
    plain = make_optimizer("adam", model, 1e-3)
    set_lr(plain, 2e-4)
    assert plain.param_groups[0]["lr"] == 2e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphed_training_matches_eager_on_cuda(tmp_path):
    config = TrainConfig(data="fake:600", epochs=2, batch_size=64, device="cuda", schedule="cosine")
    graphed = train(FIRST_MODEL, config, out=tmp_path / "graphed", progress=False)
    from unittest import mock

    with mock.patch("training.step.StepPlan.for_device", lambda device, optimizer="adam", graphs=True:
                    StepPlan("cuda", False, False, False)):
        eager = train(FIRST_MODEL, config, out=tmp_path / "eager", progress=False)
    assert graphed["test"]["bce"] == pytest.approx(eager["test"]["bce"], abs=2e-3)
