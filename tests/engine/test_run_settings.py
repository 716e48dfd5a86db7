"""Settings a run cannot honour are refused before training (naming the config key), and bf16 / channels-last
train on the CPU when deterministic numerics are off."""
import pytest
import torch

from ssl_challenge.core.config import ConfigError, from_dict
from ssl_challenge.engine import distributed
from ssl_challenge.engine.settings import PretrainConfig, check_run_settings
from ssl_challenge.models.backbones import read_model_file
from ssl_challenge.stages import pretraining
from ssl_challenge.stages.pretraining import build_pretraining_method, run_pretraining
from ssl_challenge.stages.pretraining import train as pretrain

from .worker import tiny_config, tiny_images

CPU = torch.device("cpu")


def settings(**overrides) -> PretrainConfig:
    return from_dict(PretrainConfig, tiny_config(**overrides), where="models.rot")


def test_a_batch_the_processes_cannot_share_is_refused():
    with pytest.raises(ConfigError, match="batch_size: 15 does not split over the 2 training processes"):
        check_run_settings(settings(batch_size=15), CPU, world=2)
    check_run_settings(settings(batch_size=16), CPU, world=2)


def test_one_sample_per_process_is_refused_for_batchnorm_unless_synchronised():
    config = settings(batch_size=2)
    method = build_pretraining_method(config, 96)
    with pytest.raises(ConfigError, match="batch_size: 2 over 2 processes leaves 1 sample per process.*sync_bn"):
        check_run_settings(config, CPU, world=2, method=method)
    check_run_settings(settings(batch_size=2, sync_bn=True), CPU, world=2, method=method)
    check_run_settings(config, CPU, world=2, method=torch.nn.Linear(2, 2))  # no BatchNorm: nothing to refuse


def test_bf16_and_channels_last_on_the_cpu_need_fast_numerics():
    with pytest.raises(ConfigError, match="precision: bf16 on the CPU is refused in deterministic mode"):
        check_run_settings(settings(precision="bf16"), CPU, world=1, deterministic=True)
    with pytest.raises(ConfigError, match="channels_last: refused on the CPU in deterministic mode"):
        check_run_settings(settings(channels_last=True), CPU, world=1, deterministic=True)
    check_run_settings(settings(precision="bf16", channels_last=True), CPU, world=1, deterministic=False)
    with pytest.raises(ConfigError, match="precision: 'fp16' is not one of fp32, bf16"):
        check_run_settings(settings(precision="fp16"), CPU, world=1)


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    with pytest.raises(ConfigError, match="precision: bf16 needs a GPU with bfloat16 support.*Tesla V100"):
        check_run_settings(settings(precision="bf16"), torch.device("cuda", 0), world=1)


def test_the_refusal_comes_before_the_images_are_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(pretraining, "start_numerics", lambda threads: None)  # keep this process's numerics
    monkeypatch.setattr(distributed, "world_size", lambda: 2)  # as a torchrun worker of 2 would see it
    request = {"model_config": tiny_config(batch_size=15), "pretrain_data": {}, "imagenet_root": str(tmp_path / "none"),
               "run_dir": str(tmp_path / "run"), "threads": 1, "where": "models.rot"}
    with pytest.raises(ConfigError, match="config key models.rot.batch_size: 15 does not split"):
        run_pretraining(request, lambda message: None)
    assert not (tmp_path / "run").exists()


def test_bf16_channels_last_training_runs_on_the_cpu_with_fast_numerics(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_CHALLENGE_DETERMINISTIC", "0")
    reference = read_model_file(pretrain(tiny_config(epochs=1), tiny_images(), tmp_path / "fp32", CPU,
                                         log=lambda _: None))["backbone"]
    mixed = read_model_file(pretrain(tiny_config(epochs=1, precision="bf16", channels_last=True), tiny_images(),
                                     tmp_path / "bf16", CPU, log=lambda _: None))["backbone"]
    assert all(bool(value.isfinite().all()) for value in mixed.values() if value.is_floating_point())
    # the same training, at another precision: close to fp32, but not the same bytes (autocast really ran)
    changed = [key for key in reference if not torch.equal(reference[key], mixed[key])]
    assert changed
    weights = [key for key in reference if key.endswith("conv1.weight") or key.endswith("stem.0.weight")]
    for key in weights:
        assert torch.allclose(reference[key], mixed[key], atol=0.05)
