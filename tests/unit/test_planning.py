"""The workflow's planning (src/ssl_challenge/plan/planning.py) and the checks between config keys (config_checks.py),
on small config dicts with hand-written expected names: no Snakemake, no dry run."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssl_challenge.plan import planning
from ssl_challenge.core.config import ConfigError
from ssl_challenge.plan.config_checks import check_data_sources, validate_config
from ssl_challenge.plan.planning import ModelName, format_model_name, parse_model_name

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def model(method, **extra):
    return {"method": method, "backbone": {"name": "small_resnet"}, "epochs": 2, "optimizer": {"lr": 0.1}, **extra}


def experiment(members, **extra):
    return {"members": members, "optimizer": {"lr": 0.02}, **extra}


def small_config(**overrides) -> dict:
    """Models dc, rot, odc and cls; codc2 (dc, rot; 2 rounds), its self-labelled control, and codc3 (dc, rot,
    cls) started from codc2; one named concatenation and the ablation of codc2 with its control."""
    config = {
        "models": {
            "dc": model("dc", snapshot_epochs=[1]),
            "rot": model("rot"),
            "odc": model("odc", snapshot_epochs=[1, 2]),
            "cls": model("cls", seed=5, method_options={"num_clusters": 10,
                                                        "label_models": ["codc2@r2.dc", "codc2@r2.rot"]}),
        },
        "codc": {
            "codc2": experiment(["dc", "rot"], rounds=2, seed=3, pca_dims=16, num_clusters=8),
            "codc2_self": experiment(["dc", "rot"], label_source="self"),
            "codc3": experiment(["dc", "rot", "cls"], start_from="codc2"),
        },
        "concatenations": {"pair": ["rot", "codc2@r1.dc"]},
        "ablation": {"experiments": ["codc2"], "controls": {"codc2": "codc2_self"}},
    }
    config.update(overrides)
    return validate_config(config, SCHEMA)  # fills the schema's defaults, as the Snakefile does


@pytest.fixture(scope="module")
def config() -> dict:
    return planning.canonical_config(small_config())


def rejected(edit) -> str:
    config = small_config()
    edit(config)
    with pytest.raises(ConfigError) as error:
        validate_config(config, SCHEMA)
    return str(error.value)


# ------------------------------------------------------------------------------------------------ model names
@pytest.mark.parametrize("name, parts", [
    ("rot", ModelName("rot")),
    ("dc@e4", ModelName("dc", epoch=4)),
    ("codc2@r1.dc", ModelName("codc2", round=1, member="dc")),
    ("codc2@r12.concat", ModelName("codc2", round=12, member="concat")),
])
def test_each_model_name_parses_into_its_parts_and_formats_back(name, parts):
    assert parse_model_name(name) == parts
    assert format_model_name(parts.base, epoch=parts.epoch, round=parts.round, member=parts.member) == name
    assert str(parts) == name
    assert __import__("re").fullmatch(planning.MODEL_NAME_PATTERN, name)


@pytest.mark.parametrize("name", ["Dc", "dc@e0", "dc@e04", "dc@4", "codc2@r1", "codc2@r0.dc", "codc2@r1.dc.x",
                                  "codc2@r1.Dc", "dc@", "@e1", "dc@e1.rot"])
def test_names_outside_the_grammar_are_refused_naming_them(name):
    with pytest.raises(ValueError, match=f"{name!r} is not a model name"):
        parse_model_name(name)
    assert not __import__("re").fullmatch(planning.MODEL_NAME_PATTERN, name)


def test_format_refuses_mixed_parts_and_writes_wildcard_patterns():
    with pytest.raises(ValueError, match="exclude each other"):
        format_model_name("dc", epoch=1, round=1, member="rot")
    with pytest.raises(ValueError, match="needs a member"):
        format_model_name("codc2", round=1)
    with pytest.raises(ValueError, match="is not a model name"):
        format_model_name("codc2", round=0, member="dc")
    assert format_model_name("{model}", epoch="{epoch}") == "{model}@e{epoch}"
    assert format_model_name("{experiment}", round="{round}", member="{member}") == "{experiment}@r{round}.{member}"


def test_names_regex_matches_exactly_the_names():
    import re

    pattern = planning.names_regex(["codc2@r1.dc", "rot"])
    assert re.fullmatch(pattern, "codc2@r1.dc") and re.fullmatch(pattern, "rot")
    assert not re.fullmatch(pattern, "codc2@r1xdc") and not re.fullmatch(pattern, "ro")
    assert not re.fullmatch(planning.names_regex([]), "")


# ----------------------------------------------------------------------------------------------- canonical form
def test_canonical_config_sorts_keys_in_a_new_dict_and_keeps_the_order_of_named_entries():
    raw = {"models": {"rot": {"seed": 0, "method": "rot"}, "dc": {"b": {"y": 1, "x": 2}, "a": [{"q": 1, "p": 2}]}},
           "codc": {"z": {"rounds": 1, "members": ["rot", "dc"]}, "a": {}},
           "evaluation": {"voc07_svm": {"layers": ["feat5", "feat4"], "costs": [1.0]}, "imagenet_linear": {}}}
    before = copy.deepcopy(raw)
    canonical = planning.canonical_config(raw)
    assert raw == before and list(raw["models"]["rot"]) == ["seed", "method"]  # the input is not rewritten
    assert list(canonical["models"]) == ["rot", "dc"] and list(canonical["codc"]) == ["z", "a"]  # file order
    assert list(canonical["models"]["rot"]) == ["method", "seed"]
    assert list(canonical["models"]["dc"]) == ["a", "b"] and list(canonical["models"]["dc"]["b"]) == ["x", "y"]
    assert canonical["models"]["dc"]["a"] == [{"p": 2, "q": 1}] and list(canonical["models"]["dc"]["a"][0]) == ["p", "q"]
    assert list(canonical["codc"]["z"]) == ["members", "rounds"] and canonical["codc"]["z"]["members"] == ["rot", "dc"]
    assert list(canonical["evaluation"]) == ["imagenet_linear", "voc07_svm"]
    assert canonical["evaluation"]["voc07_svm"]["layers"] == ["feat5", "feat4"]  # lists keep their order


# ------------------------------------------------------------------------------------------------------- CODC
def test_a_member_starts_from_its_model_or_from_the_start_from_experiments_last_round(config):
    assert planning.codc_member_model(config, "codc2", "dc", 0) == "dc"
    assert planning.codc_member_model(config, "codc2", "dc", 2) == "codc2@r2.dc"
    assert planning.codc_member_model(config, "codc3", "dc", 0) == "codc2@r2.dc"  # codc2's last round
    assert planning.codc_member_model(config, "codc3", "cls", 0) == "cls"  # codc2 has no cls
    assert planning.codc_member_model(config, "codc3", "rot", 1) == "codc3@r1.rot"


def test_a_start_from_chain_follows_every_experiment_back():
    config = small_config(codc={"a": experiment(["dc", "rot"], rounds=2),
                                "b": experiment(["dc", "odc"], start_from="a"),
                                "c": experiment(["dc", "odc", "rot"], start_from="b", rounds=3)},
                          concatenations={}, ablation={"experiments": ["c"]},
                          models={name: model(name) for name in ("dc", "rot", "odc")})
    assert planning.codc_member_model(config, "c", "dc", 0) == "b@r1.dc"  # b started dc from a@r2.dc
    assert planning.codc_member_model(config, "b", "dc", 0) == "a@r2.dc"
    assert planning.codc_member_model(config, "c", "odc", 0) == "b@r1.odc"
    assert planning.codc_member_model(config, "c", "rot", 0) == "rot"  # b does not have rot: not a@r2.rot
    assert planning.codc_label_models(config, "c", "dc", 1) == ["b@r1.odc", "rot"]


def test_round_final_and_trained_models_in_order(config):
    assert planning.codc_round_models(config) == [
        "codc2@r1.dc", "codc2@r1.rot", "codc2@r2.dc", "codc2@r2.rot", "codc2_self@r1.dc", "codc2_self@r1.rot",
        "codc3@r1.dc", "codc3@r1.rot", "codc3@r1.cls"]
    assert planning.codc_final_models(config) == [
        "codc2@r2.dc", "codc2@r2.rot", "codc2_self@r1.dc", "codc2_self@r1.rot", "codc3@r1.dc", "codc3@r1.rot",
        "codc3@r1.cls"]
    assert planning.trained_models(config)[:5] == ["dc", "rot", "odc", "cls", "codc2@r1.dc"]


def test_peers_label_each_other_and_the_self_control_labels_itself(config):
    assert planning.codc_label_models(config, "codc2", "dc", 1) == ["rot"]
    assert planning.codc_label_models(config, "codc2", "dc", 2) == ["codc2@r1.rot"]
    assert planning.codc_label_models(config, "codc2", "rot", 2) == ["codc2@r1.dc"]
    assert planning.codc_label_models(config, "codc2_self", "dc", 1) == ["dc"]
    assert planning.codc_label_models(config, "codc3", "cls", 1) == ["codc2@r2.dc", "codc2@r2.rot"]
    assert planning.codc_label_models(config, "codc3", "dc", 1) == ["codc2@r2.rot", "cls"]
    assert planning.codc_label_options(config, "codc2", 2) == {"num_clusters": 8, "pca_dims": 16, "seed": 5}


def test_a_rounds_training_config_wraps_the_members_method_and_names_its_files(config):
    paths = dict(model_file=lambda name: f"M/{name}", codc_labels_file=lambda e, m, r: f"L/{e}/{r}/{m}",
                 labels_file=lambda name: f"C/{name}")
    member = planning.codc_round_config(config, "codc3", "cls", 1, **paths)
    assert member["method"] == "codc" and member["backbone"] == {"name": "small_resnet", "sobel": False}
    assert member["optimizer"]["lr"] == 0.02 and member["epochs"] == 1  # the experiment's, not the model's
    options = member["method_options"]
    assert options["base_method"] == "cls"
    assert options["base_options"] == {"num_clusters": 10, "label_models": ["codc2@r2.dc", "codc2@r2.rot"],
                                       "labels_path": "C/cls"}
    assert options["labels_path"] == "L/codc3/1/cls" and options["initial_weights"] == "M/cls"
    dc = planning.codc_round_config(config, "codc3", "dc", 1, **paths)["method_options"]
    assert dc["initial_weights"] == "M/codc2@r2.dc" and "labels_path" not in dc["base_options"]
    second = planning.codc_round_config(config, "codc2", "dc", 2, **paths)
    assert second["method_options"]["initial_weights"] == "M/codc2@r1.dc" and second["seed"] == 3


def test_a_round_keeps_its_members_sync_bn_precision_and_channels_last():
    paths = dict(model_file=lambda name: f"M/{name}", codc_labels_file=lambda e, m, r: f"L/{e}/{r}/{m}",
                 labels_file=lambda name: f"C/{name}")
    config = small_config()
    config["models"]["rot"].update(sync_bn=True, precision="bf16", channels_last=True)
    config["models"]["dc"].update(sync_bn=True)
    config = planning.canonical_config(config)
    for experiment_name in ("codc2", "codc2_self", "codc3"):
        rot = planning.codc_round_config(config, experiment_name, "rot", 1, **paths)
        assert (rot["sync_bn"], rot["precision"], rot["channels_last"]) == (True, "bf16", True)
        dc = planning.codc_round_config(config, experiment_name, "dc", 1, **paths)
        assert dc["sync_bn"] is True and "precision" not in dc and "channels_last" not in dc
    # A member at the defaults: none of the keys (the training config's defaults, the schema's, fill them), so
    # the rounds' params stay those of configurations written before the members' settings were passed on.
    cls = planning.codc_round_config(config, "codc3", "cls", 1, **paths)
    assert not set(planning.CODC_MEMBER_RUN_SETTINGS) & set(cls)
    model_schema = yaml.safe_load(SCHEMA.read_text())["definitions"]["model"]["properties"]
    assert planning.CODC_MEMBER_RUN_SETTINGS == {key: model_schema[key]["default"]
                                                 for key in planning.CODC_MEMBER_RUN_SETTINGS}
    # The experiment itself cannot set them: they are the member's.
    assert "sync_bn" in rejected(lambda c: c["codc"]["codc2"].update(sync_bn=True))


def test_cls_gets_its_labels_file_and_its_label_options(config):
    assert planning.training_config(config, "cls", lambda name: f"C/{name}")["method_options"]["labels_path"] == "C/cls"
    assert "labels_path" not in planning.training_config(config, "dc", lambda name: "x")["method_options"]
    assert planning.pseudo_label_models(config, "cls") == ["codc2@r2.dc", "codc2@r2.rot"]
    # pca_dims not given: ClsOptions' default (test_schema_defaults.py keeps the two equal)
    assert planning.pseudo_label_options(config, "cls") == {"num_clusters": 10, "pca_dims": 256, "seed": 5}


# ------------------------------------------------------------------------------------- concatenations and tracks
def test_concatenations_are_the_configs_then_each_experiments_last_round(config):
    assert planning.concatenations(config) == {
        "pair": ["rot", "codc2@r1.dc"],
        "codc2@r2.concat": ["codc2@r2.dc", "codc2@r2.rot"],
        "codc2_self@r1.concat": ["codc2_self@r1.dc", "codc2_self@r1.rot"],
        "codc3@r1.concat": ["codc3@r1.dc", "codc3@r1.rot", "codc3@r1.cls"],
    }
    assert planning.leaderboard_models(config) == [
        "dc", "rot", "odc", "cls", "codc2@r2.dc", "codc2@r2.rot", "codc2_self@r1.dc", "codc2_self@r1.rot",
        "codc3@r1.dc", "codc3@r1.rot", "codc3@r1.cls", "pair", "codc2@r2.concat", "codc2_self@r1.concat",
        "codc3@r1.concat"]


def no_detection() -> dict:
    return {"voc07_detection": {"enabled": False}}  # a new dict each time: validation fills defaults in place


def test_every_row_gets_the_three_tracks_and_imagenet_only_rows_with_a_trunk():
    plain = small_config(evaluation=no_detection())
    assert set(map(tuple, planning.model_tracks(plain).values())) == {planning.TRACKS}
    real = small_config(data={"source": "real", "imagenet_root": "i", "voc07_root": "v", "places205_root": "p"},
                        evaluation={"imagenet_linear": {"enabled": True}, **no_detection()})
    tracks = planning.model_tracks(real)
    assert tracks["codc3@r1.cls"] == [*planning.TRACKS, "imagenet_linear"] and tracks["dc"][-1] == "imagenet_linear"
    assert tracks["pair"] == list(planning.TRACKS) and tracks["codc2@r2.concat"] == list(planning.TRACKS)
    assert planning.imagenet_linear_models(real) == planning.configured_models(real) + planning.codc_final_models(real)
    files = planning.evaluation_files(real, lambda name, track: [f"{name}:{track}"])
    assert files["pair"] == {track: [f"pair:{track}"] for track in planning.TRACKS}


def test_snapshots_are_models_of_their_own(config):
    assert planning.snapshot_models(config, "odc") == ["odc@e1", "odc@e2"]
    assert planning.snapshot_models(config, "rot") == []


# ---------------------------------------------------------------------------------------------------- tables
def track_files(name, track):
    return [f"{name}/{track}/feat5"]


def test_ablation_entries_with_the_control(config):
    svm = "voc07_svm"
    assert planning.ablation_entries(config, track_files) == [
        ["codc2", "dc", "before", [f"dc/{svm}/feat5"]],
        ["codc2", "dc", "after", [f"codc2@r2.dc/{svm}/feat5"]],
        ["codc2", "rot", "before", [f"rot/{svm}/feat5"]],
        ["codc2", "rot", "after", [f"codc2@r2.rot/{svm}/feat5"]],
        ["codc2", "dc", "concatenate", [f"codc2@r2.concat/{svm}/feat5"]],
        ["codc2", "dc", "control_after", [f"codc2_self@r1.dc/{svm}/feat5"]],
        ["codc2", "rot", "control_after", [f"codc2_self@r1.rot/{svm}/feat5"]],
        ["codc2", "dc", "control_concatenate", [f"codc2_self@r1.concat/{svm}/feat5"]],
    ]
    without_control = copy.deepcopy(config)
    without_control["ablation"] = {"experiments": ["codc3"], "controls": {}}
    assert [entry[:3] for entry in planning.ablation_entries(without_control, track_files)] == [
        ["codc3", "dc", "before"], ["codc3", "dc", "after"], ["codc3", "rot", "before"], ["codc3", "rot", "after"],
        ["codc3", "cls", "before"], ["codc3", "cls", "after"], ["codc3", "dc", "concatenate"]]
    assert planning.ablation_entries(without_control, track_files)[0][3] == [f"codc2@r2.dc/{svm}/feat5"]


def test_dc_vs_odc_spec_and_its_files(config):
    spec = planning.dc_vs_odc_spec(config, model_file=lambda name: f"M/{name}",
                                   benchmark_file=lambda stage, name: f"B/{stage}/{name}", track_files=track_files)
    assert list(spec) == ["dc", "odc"]
    assert spec["odc"] == {
        "method": "odc", "model": "M/odc", "benchmark": "B/pretrain/odc", "voc07_svm": ["odc/voc07_svm/feat5"],
        "voc07_lowshot": ["odc/voc07_lowshot/feat5"],
        "snapshots": {"odc@e1": {"model": "M/odc@e1", "voc07_svm": ["odc@e1/voc07_svm/feat5"]},
                      "odc@e2": {"model": "M/odc@e2", "voc07_svm": ["odc@e2/voc07_svm/feat5"]}}}
    assert planning.dc_vs_odc_files({"dc": spec["dc"]}) == [
        "M/dc", "B/pretrain/dc", "dc/voc07_svm/feat5", "dc/voc07_lowshot/feat5", "M/dc@e1", "dc@e1/voc07_svm/feat5"]
    assert planning.has_dc_vs_odc(config)
    no_odc = small_config(models={name: m for name, m in small_config()["models"].items() if name != "odc"})
    assert not planning.has_dc_vs_odc(no_odc)


# ------------------------------------------------------------------------------------------------ params per job
def test_svm_jobs_get_their_options_without_the_layers_and_the_samples_only_the_draw():
    config = planning.canonical_config(small_config(evaluation={
        "voc07_svm": {"layers": ["feat4", "feat5"], "costs": [0.1, 1.0], "extra_powers": False},
        "voc07_lowshot": {"layers": ["feat5"], "k_values": [1, 2], "num_samples": 3, "seed": 4, "costs": [1.0]}}))
    assert planning.svm_options(config, "voc07_svm") == {"costs": [0.1, 1.0], "extra_powers": False}
    assert planning.svm_options(config, "voc07_lowshot") == {"costs": [1.0], "extra_powers": True}
    assert planning.lowshot_draw_options(config) == {"num_samples": 3, "seed": 4}  # one job per k: no k list
    more = copy.deepcopy(config)
    more["evaluation"]["voc07_lowshot"]["k_values"].append(4)
    more["evaluation"]["voc07_svm"]["layers"].append("feat3")
    more["evaluation"]["voc07_lowshot"]["layers"].append("feat4")
    more["evaluation"]["voc07_lowshot"]["costs"] = [1.0, 10.0]
    assert planning.svm_options(more, "voc07_svm") == planning.svm_options(config, "voc07_svm")
    assert planning.lowshot_draw_options(more) == planning.lowshot_draw_options(config)  # nor a k, nor costs


def test_probes_take_the_image_options_only_when_they_run_the_trunk():
    online = planning.canonical_config(small_config(
        features={"layers": ["feat4", "feat5"], "pooling": "512"},
        evaluation={"voc07_svm": {"layers": ["feat5"]}, "places205_linear": {"layers": ["feat5"], "mode": "online"}}))
    assert planning.probes_online(online, "dc") and planning.probes_online(online, "pair")
    assert planning.probe_feature_options(online, True) == {"image_size": 64, "pooling": "512", "resize_shorter": 64}
    assert planning.probe_feature_options(online, False) == {}
    cached = small_config(evaluation={"places205_linear": {"mode": "cached"}})
    assert not planning.probes_online(cached, "dc") and not planning.probes_online(cached, "pair")


def test_probe_inputs_are_model_files_online_and_feature_files_cached():
    online = small_config(evaluation={"places205_linear": {"mode": "online"}})
    cached = small_config(evaluation={"places205_linear": {"mode": "cached"}})

    def inputs(config, model):
        return planning.linear_probe_inputs(config, model, lambda name: f"M/{name}",
                                            lambda name, split: f"F/{name}/{split}")

    assert inputs(online, "dc") == {"model": "M/dc"}
    # a concatenation runs its members' trunks, in member order: a named one, and a CODC experiment's
    assert inputs(online, "pair") == {"members": ["M/rot", "M/codc2@r1.dc"]}
    assert inputs(online, "codc2@r2.concat") == {"members": ["M/codc2@r2.dc", "M/codc2@r2.rot"]}
    assert inputs(online, "codc3@r1.concat") == {"members": ["M/codc3@r1.dc", "M/codc3@r1.rot", "M/codc3@r1.cls"]}
    for model in ("dc", "pair", "codc2@r2.concat"):
        assert inputs(cached, model) == {"train": f"F/{model}/places205_train", "val": f"F/{model}/places205_val"}


def test_data_roots_and_the_dataset_of_each_split():
    assert planning.data_roots(small_config(), "R") == {"imagenet": "R/imagenet", "voc07": "R/VOCdevkit",
                                                        "places205": "R/places205"}
    real = small_config(data={"source": "real", "imagenet_root": "/i", "voc07_root": "/v", "places205_root": "/p"})
    assert planning.data_roots(real, "R") == {"imagenet": "/i", "voc07": "/v", "places205": "/p"}
    assert [planning.split_dataset(split) for split in ("voc07_test", "places205_train")] == ["voc07", "places205"]


def test_planning_imports_neither_torch_nor_numpy():
    code = "import sys, ssl_challenge.plan.planning, ssl_challenge.plan.config_checks; print(sorted({m.split('.')[0] " \
           "for m in sys.modules} & {'torch', 'numpy'}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------- checks between config keys
@pytest.mark.parametrize("edit, key, words", [
    (lambda c: c["models"].clear(), "models", "is empty"),
    (lambda c: c["codc"]["codc2"].update(members=["dc", "rotation"]), "codc.codc2.members", "'rotation'"),
    (lambda c: c["models"].update(rnd=model("random")) or c["codc"]["codc2"].update(members=["dc", "rnd"]),
     "codc.codc2.members", "method 'random'"),
    (lambda c: c["codc"]["codc2"].update(start_from="codc9"), "codc.codc2.start_from", "not another"),
    (lambda c: c["codc"]["codc2"].update(start_from="codc2"), "codc.codc2.start_from", "not another"),
    (lambda c: c["codc"]["codc2"].update(start_from="codc3"), "codc.codc2.start_from",
     "a cycle codc2 -> codc3 -> codc2"),
    (lambda c: c["concatenations"].update(pair=["rot", "codc2@r3.dc"]), "concatenations.pair", "'codc2@r3.dc'"),
    (lambda c: c["concatenations"].update(rot=["dc", "odc"]), "concatenations.rot", "already a configured model"),
    (lambda c: c["models"].update(concat=model("rot")), "models.concat", "reserved"),
    (lambda c: c["ablation"].update(experiments=["codc2", "codc4"]), "ablation.experiments", "'codc4'"),
    (lambda c: c["ablation"].update(controls={"codc2": "codc3"}), "ablation.controls.codc2", "label_source: self"),
    (lambda c: c["ablation"].update(controls={"codc3": "codc2_self"}), "ablation.controls.codc3",
     "not in ablation.experiments"),
    (lambda c: c["models"]["cls"]["method_options"].update(label_models=["codc2@r3.dc"]),
     "models.cls.method_options.label_models", "'codc2@r3.dc'"),
    (lambda c: c["models"]["cls"]["method_options"].pop("num_clusters"), "models.cls.method_options",
     "missing required key 'num_clusters'"),
    (lambda c: c["models"]["cls"]["method_options"].update(label_models=[]), "models.cls.method_options.label_models",
     "name the models"),
    (lambda c: c["models"]["odc"]["method_options"].update(num_clusters=1), "models.odc.method_options.num_clusters",
     "need at least 2 clusters, got 1"),
    (lambda c: c["models"]["rot"]["method_options"].update(head_std=0.1), "models.rot.method_options",
     "unknown key(s) ['head_std']"),
    (lambda c: c["codc"]["codc2"]["online_options"].update(memory_momentum=0.0),
     "codc.codc2.online_options.memory_momentum", "expected 0 < m <= 1"),
    (lambda c: c.update(features={"layers": ["feat5"]}), "evaluation.voc07_svm.layers", "['feat1', 'feat2'"),
    (lambda c: c.update(evaluation={"imagenet_linear": {"enabled": True}}), "evaluation.imagenet_linear.enabled",
     "embedded"),
    (lambda c: c.update(data={"source": "real", "imagenet_root": "/i", "voc07_root": "/v"}),
     "data.places205_root", "is empty"),
])
def test_a_reference_to_nothing_is_refused_naming_the_key(edit, key, words):
    message = rejected(edit)
    assert f"config key '{key}'" in message and words in message, message


def test_each_entry_gets_its_own_copy_of_a_default():
    config = small_config()  # dc and rot give no method_options: both get the schema's {}
    config["models"]["dc"]["method_options"]["num_clusters"] = 4
    assert config["models"]["rot"]["method_options"] == {}


def test_the_fashion_mnist_folder_is_checked_until_the_embedded_set_is_built(tmp_path):
    config = small_config(data={"embedded": {"fashion_mnist_dir": str(tmp_path)}})
    with pytest.raises(ConfigError, match="config key 'data.embedded.fashion_mnist_dir'.*train-images-idx3-ubyte.gz"):
        check_data_sources(config, embedded_built=False)
    check_data_sources(config, embedded_built=True)  # the build no longer needs the source


def test_detection_goes_to_the_configured_models_and_the_last_concatenations_members_by_default():
    auto = small_config()
    # The last concatenation is codc3's (CODC concatenations follow the config's): its members after the round.
    assert planning.detection_models(auto) == ["dc", "rot", "odc", "cls", "codc3@r1.dc", "codc3@r1.rot",
                                               "codc3@r1.cls"]
    assert planning.model_tracks(auto)["codc3@r1.cls"][-1] == "voc07_detection"
    assert "voc07_detection" not in planning.model_tracks(auto)["codc2@r2.dc"]
    every = small_config(evaluation={"voc07_detection": {"models": "all"}})
    assert planning.detection_models(every) == planning.configured_models(every) + planning.codc_final_models(every)
    listed = small_config(evaluation={"voc07_detection": {"models": ["rot"]}})
    assert planning.detection_models(listed) == ["rot"]


@pytest.mark.parametrize("models, message", [(["pair"], "has no trunk"), (["nope"], "not a leaderboard model")])
def test_detection_of_a_concatenation_or_an_unknown_row_names_the_key(models, message):
    config = small_config(evaluation={"voc07_detection": {"models": models}})
    with pytest.raises(ValueError, match=f"evaluation.voc07_detection.models.*{message}"):
        planning.detection_models(config)


def test_a_submission_is_built_from_each_result_files_test_scores():
    config = small_config(evaluation={"voc07_detection": {"models": ["rot"]}})
    spec = planning.submission_spec(config, "rot", lambda name, track: [f"{name}/{track}.json"],
                                    lambda result: result + ".scores")
    assert spec == {track: {f"rot/{track}.json": f"rot/{track}.json.scores"} for track in planning.SUBMITTED_TRACKS}
    assert planning.submission_spec(config, "dc", lambda name, track: [track], str)["voc07_detection"] == {}


def test_training_reads_a_cls_models_labels_and_an_external_models_checkpoint():
    config = small_config()
    assert planning.training_inputs(config, "cls", lambda name: f"labels/{name}") == ["labels/cls"]
    assert planning.training_inputs(config, "rot", str) == []
    config["models"]["ext"] = {"method": "external", "method_options": {"weights": "w.pth"}}
    assert planning.training_inputs(config, "ext", str) == ["w.pth"]
    config["models"]["ext"]["method_options"] = {}
    with pytest.raises(ValueError, match="models.ext.method_options.weights"):
        planning.training_inputs(config, "ext", str)


def test_features_are_extracted_per_data_set():
    assert planning.dataset_splits() == {"voc07": ["voc07_trainval", "voc07_test"],
                                         "places205": ["places205_train", "places205_val"]}
