from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ssl_challenge.core.config import ConfigError, from_dict


@dataclass(frozen=True)
class Inner:
    lr: float
    nesterov: bool = False


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner
    milestones: tuple[int, ...] = ()
    options: dict = field(default_factory=dict)
    seed: int | None = None


def test_builds_nested_frozen_dataclasses_and_converts_lists():
    config = from_dict(Outer, {"name": "rot", "inner": {"lr": 1}, "milestones": [3, 5]})
    assert config == Outer("rot", Inner(1.0), (3, 5))
    assert isinstance(config.inner.lr, float)


def test_unknown_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match=r"models\.rot\.inner: unknown key\(s\) \['lrr'\]"):
        from_dict(Outer, {"name": "rot", "inner": {"lrr": 1}}, where="models.rot")


def test_wrong_type_and_missing_key_are_named():
    with pytest.raises(ConfigError, match=r"x\.inner\.lr: expected a number"):
        from_dict(Outer, {"name": "rot", "inner": {"lr": "fast"}}, where="x")
    with pytest.raises(ConfigError, match=r"x\.milestones\[1\]: expected an integer"):
        from_dict(Outer, {"name": "rot", "inner": {"lr": 1}, "milestones": [1, 2.5]}, where="x")
    with pytest.raises(ConfigError, match="missing required key 'inner'"):
        from_dict(Outer, {"name": "rot"}, where="x")
    with pytest.raises(ConfigError, match=r"x\.seed: expected int \| None, got bool True"):
        from_dict(Outer, {"name": "rot", "inner": {"lr": 1}, "seed": True}, where="x")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_named(value):
    with pytest.raises(ConfigError, match=rf"models\.rot\.inner\.lr: expected a finite number, got {value}"):
        from_dict(Outer, {"name": "rot", "inner": {"lr": value}}, where="models.rot")
