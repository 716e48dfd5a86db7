"""plan/site_config.py: which keys a site file may set, and the order of the merge (site over a real-data
configuration, the command line's --config over the site)."""
from __future__ import annotations

import pytest
import yaml

from ssl_challenge.core.config import ConfigError
from ssl_challenge.plan import site_config


def site_file(tmp_path, settings) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


def real_config() -> dict:
    return {"data": {"source": "real", "imagenet_root": "/datasets/imagenet", "voc07_root": "/datasets/VOCdevkit"},
            "evaluation": {"voc07_svm": {"costs": [1.0]}}}


def test_the_site_file_is_merged_over_a_real_data_configuration(tmp_path):
    config = real_config()
    path = site_file(tmp_path, {"data": {"imagenet_root": "/site/imagenet"},
                                "evaluation": {"voc07_lowshot": {"published_samples": "/site/low_shot"}}})
    merged = site_config.merge_site_config(config, path)
    assert merged == ["data.imagenet_root", "evaluation.voc07_lowshot.published_samples"]
    assert config["data"] == {"source": "real", "imagenet_root": "/site/imagenet", "voc07_root": "/datasets/VOCdevkit"}
    assert config["evaluation"] == {"voc07_svm": {"costs": [1.0]},
                                    "voc07_lowshot": {"published_samples": "/site/low_shot"}}


def test_the_command_line_wins_and_embedded_configurations_are_left_alone(tmp_path):
    path = site_file(tmp_path, {"data": {"imagenet_root": "/site/imagenet", "voc07_root": "/site/voc"}})
    config = real_config()
    site_config.merge_site_config(config, path, {"data": {"imagenet_root": "/command/line"}})
    assert config["data"]["imagenet_root"] == "/command/line" and config["data"]["voc07_root"] == "/site/voc"
    embedded = {"data": {"source": "embedded"}}
    assert site_config.merge_site_config(embedded, path) == [] and embedded == {"data": {"source": "embedded"}}
    assert site_config.merge_site_config(real_config(), tmp_path / "absent.yaml") == []


@pytest.mark.parametrize("settings, message", [
    ({"data": {"imagenet_rot": "/x"}}, "key 'data.imagenet_rot' is not a site setting"),
    ({"models": {"rot": {"epochs": 1}}}, "key 'models.rot.epochs' is not a site setting"),
    ({"data": {"voc07_root": 3}}, "key 'data.voc07_root' = 3: expected a str"),
    (["a", "list"], "expected a mapping of config keys"),
])
def test_a_wrong_key_or_type_names_the_file(tmp_path, settings, message):
    path = site_file(tmp_path, settings)
    with pytest.raises(ConfigError, match="site.yaml") as error:
        site_config.merge_site_config({"data": {"source": "embedded"}}, path)  # checked even where not merged
    assert message in str(error.value)
