"""Stage outputs, channel bookkeeping and the config builder of the multi-stage backbones."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet50 as torchvision_resnet50

from conftest import Payload
from ssl_challenge.core.io import ModelFileError
from ssl_challenge.models.backbones import LAYER_NAMES, build_backbone, load_backbone, read_model_file

torch.set_num_threads(1)


def stage_shapes(backbone, size, batch=2):
    with torch.no_grad():
        outputs = backbone.eval()(torch.randn(batch, 3, size, size))
    return {layer: tuple(tensor.shape) for layer, tensor in outputs.items()}


def test_small_resnet_stage_shapes_at_pretraining_and_evaluation_sizes():
    backbone = build_backbone({"name": "small_resnet"})
    widths = backbone.config["widths"]
    assert backbone.layer_names == LAYER_NAMES
    assert backbone.layer_channels == dict(zip(LAYER_NAMES, [widths[0], *widths]))
    assert backbone.out_dim == widths[-1]
    for size in (32, 64):
        sides = [size, size, size // 2, size // 4, size // 8]  # stride-1 stem, stage strides 1, 2, 2, 2
        expected = {layer: (2, backbone.layer_channels[layer], side, side) for layer, side in zip(LAYER_NAMES, sides)}
        assert stage_shapes(backbone, size) == expected


def test_small_resnet_options_and_pooled_feature():
    backbone = build_backbone({"name": "small_resnet", "widths": [4, 8, 12, 16], "blocks": [2, 1, 1, 3],
                               "zero_init_residual": True})
    assert backbone.layer_channels == {"feat1": 4, "feat2": 4, "feat3": 8, "feat4": 12, "feat5": 16}
    assert [len(stage) for stage in backbone.stages] == [2, 1, 1, 3]
    assert all(bool((block.bn2.weight == 0).all()) for stage in backbone.stages for block in stage)
    images = torch.randn(3, 3, 20, 20)
    pooled = backbone.eval().pooled(images)
    assert pooled.shape == (3, 16)
    torch.testing.assert_close(pooled, backbone(images)["feat5"].mean(dim=(2, 3)))


def test_small_resnet_trains_and_channels_last_input_changes_no_value(monkeypatch):
    torch.manual_seed(0)
    # Widths that are all multiples of 8 turn CPU channels-last on (narrower ones keep NCHW, see
    # backbones._channels_last_is_safe), so the forward below takes the channels-last path and the manual one not.
    backbone = build_backbone({"name": "small_resnet", "widths": [8, 8, 16, 16]})
    assert backbone.cpu_channels_last
    assert not build_backbone({"name": "small_resnet", "widths": [4, 4, 8, 8]}).cpu_channels_last
    images = torch.randn(4, 3, 16, 16)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)  # channels-last is used only while oneDNN is on
    assert backbone._prepare_input(images).is_contiguous(memory_format=torch.channels_last)
    backbone.pooled(images).square().mean().backward()
    assert all(parameter.grad is not None for parameter in backbone.parameters())
    backbone.eval()
    outputs = backbone(images)
    assert outputs["feat1"].is_contiguous(memory_format=torch.channels_last)
    manual = images  # the stages run by hand on a plain NCHW tensor
    for stage in backbone.stage_functions():
        manual = stage(manual)
    assert manual.is_contiguous() and not manual.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(outputs["feat5"], manual)


@pytest.mark.parametrize("zero_init_residual", [False, True])
def test_small_resnet_blocks_are_torchvisions_basic_block(monkeypatch, zero_init_residual):
    """The small ResNet's own BasicBlock gives torchvision's parameters, outputs and gradients, bit for bit."""
    from torchvision.models.resnet import BasicBlock as TorchvisionBasicBlock

    from ssl_challenge.models import backbones

    def forward_backward():
        torch.manual_seed(3)
        backbone = build_backbone({"name": "small_resnet", "zero_init_residual": zero_init_residual})
        images = torch.randn(6, 3, 32, 32, requires_grad=True)
        outputs = backbone(images)
        sum((output * output).mean() for output in outputs.values()).backward()
        return backbone.state_dict(), outputs, [p.grad for p in backbone.parameters()] + [images.grad]

    own = forward_backward()
    monkeypatch.setattr(backbones, "BasicBlock", TorchvisionBasicBlock)
    reference = forward_backward()
    assert list(own[0]) == list(reference[0])  # the same state dict keys, in the same order
    assert all(torch.equal(own[0][key], reference[0][key]) for key in own[0])
    assert all(torch.equal(own[1][layer], reference[1][layer]) for layer in LAYER_NAMES)
    assert all(torch.equal(a, b) for a, b in zip(own[2], reference[2]))
    if zero_init_residual:  # each block's last BatchNorm starts at zero (torchvision's isinstance check, ours)
        last_norms = [value for key, value in own[0].items() if key.endswith(".bn2.weight")]
        assert len(last_norms) == 4 and not any(weight.any() for weight in last_norms)


def test_the_embedded_network_does_not_import_torchvision():
    """Importing torchvision (and torch._dynamo with it) took about 1 s of each job; the small ResNet needs neither."""
    code = ("import sys, torch\n"
            "from ssl_challenge.models.backbones import build_backbone\n"
            "build_backbone({'name': 'small_resnet'})(torch.zeros(1, 3, 32, 32))\n"
            "print(sorted(name for name in ('torchvision', 'torch._dynamo') if name in sys.modules))\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_cpu_channels_last_only_for_channel_counts_that_torch_handles():
    # torch 2.14.1 corrupts the heap in a strided 1x1 convolution backward on channels-last with < 8 channels
    assert build_backbone({"name": "small_resnet"}).cpu_channels_last
    assert not build_backbone({"name": "small_resnet", "widths": [4, 8, 8, 8]}).cpu_channels_last


def test_resnet50_stages_match_torchvision_and_feat1_is_before_maxpool():
    torch.manual_seed(0)
    backbone = build_backbone({"name": "resnet50"}).eval()
    reference = torchvision_resnet50(weights=None)
    state = {key: value for key, value in reference.state_dict().items() if not key.startswith("fc.")}
    backbone.load_state_dict(state, strict=True)  # same parameter names as torchvision, minus the classifier
    reference.eval()
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        outputs = backbone(images)
        stem = reference.relu(reference.bn1(reference.conv1(images)))
        res5 = reference.layer4(reference.layer3(reference.layer2(reference.layer1(reference.maxpool(stem)))))
    assert {layer: tuple(t.shape) for layer, t in outputs.items()} == {
        "feat1": (1, 64, 112, 112), "feat2": (1, 256, 56, 56), "feat3": (1, 512, 28, 28),
        "feat4": (1, 1024, 14, 14), "feat5": (1, 2048, 7, 7)}
    torch.testing.assert_close(outputs["feat1"], stem)
    # channels-last on CPU picks other convolution kernels: equal up to float32 summation order
    torch.testing.assert_close(outputs["feat5"], res5, atol=2e-3, rtol=1e-3)
    assert backbone.out_dim == 2048 and backbone.layer_channels["feat3"] == 512


def test_build_backbone_records_resolved_config_and_rebuilds_the_same_network():
    backbone = build_backbone({"name": "small_resnet", "widths": [4, 8, 8, 8]})
    assert backbone.config == {"name": "small_resnet", "widths": [4, 8, 8, 8], "blocks": [1, 1, 1, 1],
                               "zero_init_residual": False, "sobel": False}
    rebuilt = build_backbone(backbone.config)
    rebuilt.load_state_dict(backbone.state_dict(), strict=True)


@pytest.mark.parametrize("config, named", [
    ({"name": "vgg16"}, "backbone.name"),
    ({"widths": [8, 8, 8, 8]}, "backbone.name"),
    ({"name": "small_resnet", "width": [8, 8, 8, 8]}, "width"),
    ({"name": "small_resnet", "widths": [8, 8, 8]}, "backbone.widths"),
    ({"name": "small_resnet", "blocks": [1, 0, 1, 1]}, "backbone.blocks"),
    ({"name": "resnet50", "widths": [8, 8, 8, 8]}, "widths"),
    ({"name": "resnet50", "conv_init": "xavier"}, "backbone.conv_init"),
    ({"name": "small_resnet", "conv_init": "fan_in"}, "conv_init"),  # a ResNet-50 option only
])
def test_build_backbone_rejects_unknown_names_and_keys(config, named):
    with pytest.raises(ValueError, match=named):
        build_backbone(config)


# ------------------------------------------------------------------------------------------------ initialisation
def conv_fans(conv: torch.nn.Conv2d) -> tuple[int, int]:
    kernel_area = conv.kernel_size[0] * conv.kernel_size[1]
    return conv.in_channels * kernel_area, conv.out_channels * kernel_area


@pytest.mark.parametrize("name, conv_init", [("resnet50", "fan_in"), ("resnet50", "fan_out"),
                                             ("small_resnet", "fan_out")])
def test_convolutions_start_with_the_kaiming_std_of_the_chosen_fan(name, conv_init):
    """Kaiming normal for ReLU draws N(0, 2 / fan): each convolution's weight std within 10% of sqrt(2 / fan) of
    the chosen fan (3 standard errors of the std for the smallest layer here, 432 weights), and more than 25% from
    the other fan's wherever the two fans differ by 2x or more (stds sqrt(2) apart: no std passes both); BatchNorm
    starts at weight 1, bias 0."""
    torch.manual_seed(0)
    config = {"name": "resnet50", "conv_init": conv_init} if name == "resnet50" else \
        {"name": "small_resnet", "widths": [16, 32, 64, 128]}  # torchvision's fan_out, always
    backbone = build_backbone(config)
    telling = 0
    for where, module in backbone.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert bool((module.weight == 1).all()) and bool((module.bias == 0).all()), where
        if not isinstance(module, torch.nn.Conv2d):
            continue
        fan_in, fan_out = conv_fans(module)
        chosen, other = (fan_in, fan_out) if conv_init == "fan_in" else (fan_out, fan_in)
        std = module.weight.std().item()
        assert abs(std / (2 / chosen) ** 0.5 - 1) < 0.1, (where, std, chosen)
        if max(chosen, other) / min(chosen, other) >= 2:  # stds sqrt(2) apart or more: the other mode fails
            assert abs(std / (2 / other) ** 0.5 - 1) > 0.25, (where, std, other)
            telling += 1
    assert telling >= 4


# ------------------------------------------------------------------------------------------------ model files
def model_file(path, backbone, **extra):
    torch.save({"backbone": backbone.state_dict(), "backbone_config": backbone.config, "train_seconds": 1.0,
                "device": "cpu", "epochs": 1, **extra}, path)
    return path


@pytest.fixture
def small_backbone():
    torch.manual_seed(0)
    return build_backbone({"name": "small_resnet", "widths": [4, 4, 4, 4]})


def test_every_reader_of_model_files_refuses_a_planted_payload(tmp_path, small_backbone):
    from ssl_challenge.reporting.dc_vs_odc import dc_vs_odc_from_spec
    from ssl_challenge.methods.codc import load_initial_weights

    marker = tmp_path / "marker"
    path = model_file(tmp_path / "model.pth", small_backbone, extra=Payload(marker))
    expected = f"{path}: refused: it holds objects other than tensors and plain values, and loading it could run code"
    for read in (lambda: load_backbone(path, torch.device("cpu")),
                 lambda: load_initial_weights(build_backbone(small_backbone.config), str(path)),
                 lambda: dc_vs_odc_from_spec({"dc": {"method": "dc", "model": str(path), "voc07_svm": [],
                                                     "voc07_lowshot": []}})):
        with pytest.raises(ModelFileError, match=expected):
            read()
    assert not marker.exists()


def test_model_file_reader_loads_a_model_and_names_what_is_wrong(tmp_path, small_backbone):
    path = model_file(tmp_path / "model.pth", small_backbone)
    loaded, config = load_backbone(path, torch.device("cpu"))
    assert config == small_backbone.config
    for key, value in small_backbone.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.save({"backbone": small_backbone.state_dict()}, tmp_path / "no_config.pth")
    with pytest.raises(ModelFileError, match="no_config.pth: not a model file .*'backbone_config'"):
        read_model_file(tmp_path / "no_config.pth")
    diverged = build_backbone(small_backbone.config)
    with torch.no_grad():
        diverged.stem[0].weight[0, 0, 0, 0] = float("nan")
    model_file(tmp_path / "diverged.pth", diverged)
    with pytest.raises(ModelFileError, match=r"diverged.pth: 1 backbone tensors hold NaN .*stem.0.weight.*diverged"):
        read_model_file(tmp_path / "diverged.pth")
def test_sobel_layer_gives_the_hand_computed_responses():
    from ssl_challenge.models.backbones import SobelFilter

    # gray = channel mean = [0, 0, 1, 1] in every row (red 3x, green and blue 0); zero padding 1.
    image = torch.zeros(1, 3, 3, 4)
    image[0, 0] = torch.tensor([0.0, 0.0, 3.0, 3.0])
    responses = SobelFilter()(image)[0]
    # horizontal [[1, 0, -1], [2, 0, -2], [1, 0, -1]]: 3 (edge rows) or 4 (middle) x (g[j-1] - g[j+1])
    assert responses[0].tolist() == [[0, -3, -3, 3], [0, -4, -4, 4], [0, -3, -3, 3]]
    # vertical (the transpose): (row above) - (row below), each weighted [1, 2, 1]
    assert responses[1].tolist() == [[0, -1, -3, -3], [0, 0, 0, 0], [0, 1, 3, 3]]
    assert list(SobelFilter().parameters()) == [] and SobelFilter().state_dict() == {}


@pytest.mark.parametrize("name, stem", [("small_resnet", "stem.0"), ("resnet50", "conv1")])
def test_sobel_backbone_takes_two_channels_and_survives_save_and_load(tmp_path, name, stem):
    from ssl_challenge.models.backbones import SobelFilter, load_backbone

    torch.manual_seed(0)
    backbone = build_backbone({"name": name, "sobel": True}).eval()
    assert backbone.config["sobel"] is True
    assert backbone.get_submodule(stem).in_channels == 2
    assert build_backbone({"name": name}).get_submodule(stem).in_channels == 3
    path = tmp_path / "model.pth"
    torch.save({"backbone": backbone.state_dict(), "backbone_config": backbone.config}, path)
    loaded, config = load_backbone(path, torch.device("cpu"))
    assert config["sobel"] is True and isinstance(loaded.sobel, SobelFilter)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = backbone(images)["feat1"]
        assert torch.equal(loaded(images)["feat1"], expected)
        # feat1 is the stem applied to the Sobel responses of the RGB input
        assert torch.allclose(loaded.stage_functions()[0](SobelFilter()(images)), expected, atol=1e-6)
