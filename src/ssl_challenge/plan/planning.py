"""What the workflow runs and what each model is called: pure, torch-free functions of the validated config.

rules/common.smk calls these to build the DAG; they read a config that the schema has validated and filled with
defaults (``config_checks.validate_config``) and that :func:`canonical_config` has given sorted keys. Nothing here
touches the file system: where a plan holds a file, the caller passes the function that names it.

Model names (:func:`format_model_name` writes them, :func:`parse_model_name` reads them; nothing else builds one):

    rot               a configured model (``models.rot``) or a named concatenation (``concatenations.rot``)
    dc@e4             the backbone of model dc after its epoch 4 (``models.dc.snapshot_epochs``)
    codc2@r1.dc       member dc of CODC experiment codc2 after round 1
    codc2@r1.concat   the concatenation of codc2's members after round 1 (its last round)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .. import methods
from ..data.layouts import EMBEDDED_ROOTS
from ..data.splits import FEATURE_SPLITS
from ..methods import codc_options as codc
from ..methods.spec import EXTERNAL_WEIGHTS

NAME = "[a-z][a-z0-9_]*"  # a configured model, a CODC experiment or a concatenation (the schema's propertyNames)
CONCAT = "concat"  # the member part of a CODC experiment's concatenation (so no model may be called "concat")
TRACKS = ("voc07_svm", "voc07_lowshot", "places205_linear")  # every leaderboard row gets these
NAMED_SECTIONS = ("models", "codc", "concatenations")  # entries keep the file's order: the leaderboard's rows
CODC_TRAINING_KEYS = ("epochs", "batch_size", "optimizer", "schedule", "seed", "checkpoint_every")
# A round's run settings that come from its member's own recipe (models.<member>), with their defaults (the
# schema's and PretrainConfig's): ROT and ODC keep their SyncBN in a round, a bf16 or channels-last member stays so.
CODC_MEMBER_RUN_SETTINGS = {"sync_bn": False, "precision": "fp32", "channels_last": False}
# What a job's result depends on, per job kind (besides its input files and its wildcards): its params.
SVM_OPTIONS = ("costs", "extra_powers")  # an SVM job (full or low-shot) of one layer; not the list of layers
LOWSHOT_DRAW_OPTIONS = ("num_samples", "seed")  # one k's low-shot samples; each (k, sample) drawn alone
PROBE_FEATURE_OPTIONS = ("image_size", "pooling", "resize_shorter")  # what an online probe takes of `features`

TrackFiles = Callable[[str, str], "list[str]"]  # (model, track) -> its result files (rules/common.smk)
LabelsFile = Callable[[str], str]  # configured model -> the file of the pseudo-labels it asks for (rules/common.smk)

_MODEL_NAME = re.compile(
    rf"(?P<base>{NAME})(@(e(?P<epoch>[1-9][0-9]*)|r(?P<round>[1-9][0-9]*)\.(?P<member>{NAME})))?"
)
MODEL_NAME_PATTERN = re.sub(r"\?P<\w+>", "", _MODEL_NAME.pattern)  # the grammar, as a wildcard constraint


# ---------------------------------------------------------------------------------------------- model names
def names_regex(names) -> str:
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


@dataclass(frozen=True)
class ModelName:
    """A parsed model name: ``base`` alone, with an ``epoch`` (a snapshot), or with a ``round`` and a ``member``
    (a CODC member after that round, or ``member == CONCAT``: the experiment's concatenation)."""

    base: str
    epoch: int | None = None
    round: int | None = None
    member: str | None = None

    def __str__(self) -> str:
        return format_model_name(self.base, epoch=self.epoch, round=self.round, member=self.member)


def format_model_name(base: str, *, epoch: int | str | None = None, round: int | str | None = None,
                      member: str | None = None) -> str:
    """``base``, ``base@e{epoch}`` or ``base@r{round}.{member}`` (see the module's docstring). A part may be a
    Snakemake wildcard (``"{member}"``), which writes the pattern of an output instead of a name."""
    if epoch is not None and (round is not None or member is not None):
        raise ValueError(f"model name of {base!r}: a snapshot epoch and a CODC round exclude each other")
    if (round is None) != (member is None):
        raise ValueError(f"model name of {base!r}: a CODC round needs a member and a member a round")
    if epoch is not None:
        name = f"{base}@e{epoch}"
    elif round is not None:
        name = f"{base}@r{round}.{member}"
    else:
        name = base
    if "{" not in name:
        parse_model_name(name)  # the only names written are the ones the grammar reads back
    return name


def parse_model_name(name: str) -> ModelName:
    """The parts of a model name; raises ``ValueError`` naming it when it is not in the grammar."""
    match = _MODEL_NAME.fullmatch(name)
    if not match:
        raise ValueError(f"{name!r} is not a model name: expected name, name@e<epoch> or "
                         f"experiment@r<round>.<member> (lower-case names, epochs and rounds from 1)")
    epoch, round_ = match.group("epoch"), match.group("round")
    return ModelName(match.group("base"), epoch=int(epoch) if epoch else None,
                     round=int(round_) if round_ else None, member=match.group("member"))


# ------------------------------------------------------------------------------------------- canonical form
def canonical(value):
    """``value`` with every mapping's keys sorted (lists keep their order)."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def canonical_config(config: dict) -> dict:
    """A copy of ``config`` with sorted keys, so that reordering the keys of a config file marks no rule's params
    as changed (Snakemake compares their repr). The named entries of ``NAMED_SECTIONS`` keep the file's order."""
    return {section: ({name: canonical(entry) for name, entry in value.items()} if section in NAMED_SECTIONS
                      else canonical(value))
            for section, value in config.items()}


# ----------------------------------------------------------------------------------------- configured models
def configured_models(config: dict) -> list[str]:
    return list(config["models"])


def models_with_method(config: dict, *methods: str) -> list[str]:
    return [name for name, model in config["models"].items() if model["method"] in methods]


def snapshot_models(config: dict, model: str) -> list[str]:
    """The intermediate backbones kept of ``model``, as models of their own."""
    return [format_model_name(model, epoch=epoch) for epoch in config["models"][model]["snapshot_epochs"]]


def method_options(config: dict, model: str, labels_file: LabelsFile) -> dict:
    """A model's method_options as its training job sees them: a method that asks for pseudo-labels (CLS) gets
    their file in the option its declaration names."""
    options = dict(config["models"][model]["method_options"])
    option = methods.pseudo_labels_option(config["models"][model]["method"])
    if option:
        options[option] = labels_file(model)
    return options


def training_config(config: dict, model: str, labels_file: LabelsFile) -> dict:
    """The training job's config of a configured model."""
    return {**config["models"][model], "method_options": method_options(config, model, labels_file)}


def training_inputs(config: dict, model: str, labels_file: LabelsFile) -> list[str]:
    """Files a configured model's training reads beside the images (the method's declaration says which): the
    pseudo-labels it asks for (CLS), a checkpoint named by the user (external; a new checkpoint makes the model
    stale)."""
    method = config["models"][model]["method"]
    files = [labels_file(model)] if methods.pseudo_labels_option(method) else []
    options = config["models"][model].get("method_options", {})
    where = f"models.{model}.method_options"
    return files + [entry.file for entry in methods.input_files(method, options, where)
                    if entry.kind == EXTERNAL_WEIGHTS]


def models_with_pseudo_labels(config: dict) -> list[str]:
    """The configured models whose method asks the workflow for pseudo-labels (CLS)."""
    return [name for name, model in config["models"].items() if methods.pseudo_labels_option(model["method"])]


def pseudo_labels(config: dict, model: str) -> methods.PseudoLabels:
    """The pseudo-labels a configured model asks for (its method's declaration reads its method_options)."""
    model_config = config["models"][model]
    return methods.pseudo_labels(model_config["method"], model_config["method_options"],
                                 f"models.{model}.method_options")


def pseudo_label_models(config: dict, model: str) -> list[str]:
    """The models whose concatenated features a model's pseudo-labels cluster."""
    return list(pseudo_labels(config, model).models)


def pseudo_label_options(config: dict, model: str) -> dict:
    """k, PCA dims and seed of a model's pseudo-labels (its method_options and its seed)."""
    return pseudo_labels(config, model).job_options(config["models"][model]["seed"])


# --------------------------------------------------------------------------------------------------- CODC
def codc_member_model(config: dict, experiment: str, member: str, round_: int) -> str:
    """The model name of a CODC member after ``round_``; round 0 is where the member starts from: the last round
    of ``start_from`` when that experiment has the member too, else the configured model."""
    if round_ > 0:
        return format_model_name(experiment, round=round_, member=member)
    start = config["codc"][experiment]["start_from"]
    if start and member in config["codc"][start]["members"]:
        return codc_member_model(config, start, member, config["codc"][start]["rounds"])
    return member


def codc_round_models(config: dict) -> list[str]:
    """Every member after every round of every CODC experiment."""
    return [codc_member_model(config, name, member, round_)
            for name, experiment in config["codc"].items()
            for round_ in range(1, experiment["rounds"] + 1)
            for member in experiment["members"]]


def codc_final_models(config: dict) -> list[str]:
    """Every member after its experiment's last round (a leaderboard row each)."""
    return [codc_member_model(config, name, member, experiment["rounds"])
            for name, experiment in config["codc"].items() for member in experiment["members"]]


def trained_models(config: dict) -> list[str]:
    """Models a training job writes: configured models and CODC members after each round."""
    return configured_models(config) + codc_round_models(config)


def codc_label_models(config: dict, experiment: str, member: str, round_: int) -> list[str]:
    """The models whose features give a member's initial labels in a round: its peers' previous round, or its own
    in a control experiment (``methods.codc_options.feature_sources``)."""
    sources = codc.feature_sources(config["codc"][experiment], member)
    return [codc_member_model(config, experiment, source, round_ - 1) for source in sources]


def codc_label_options(config: dict, experiment: str, round_: int) -> dict:
    """k, PCA dims and seed of a round's initial labels (the experiment's settings, read by the CODC method)."""
    return codc.round_label_options(config["codc"][experiment], round_)


def codc_round_config(config: dict, experiment: str, member: str, round_: int, *,
                      model_file: Callable[[str], str], codc_labels_file: Callable[[str, str, int], str],
                      labels_file: LabelsFile) -> dict:
    """The training config of one member in one round: the codc method around the member's own method, started
    from its previous-round weights, with the round's initial labels; the experiment's schedule (one for all
    members) and the member's own run settings (``CODC_MEMBER_RUN_SETTINGS``: a setting at its default is left
    out, the training config's default fills it, so a round's params name only what its member changed)."""
    settings, base = config["codc"][experiment], config["models"][member]
    return {
        "method": "codc",
        "backbone": base["backbone"],
        "augmentation": base["augmentation"],  # each member keeps its own image pipeline
        **{key: settings[key] for key in CODC_TRAINING_KEYS if key in settings},
        **{key: base[key] for key, default in CODC_MEMBER_RUN_SETTINGS.items() if base.get(key, default) != default},
        "method_options": codc.round_options(
            settings, base["method"], method_options(config, member, labels_file),
            codc_labels_file(experiment, member, round_),
            model_file(codc_member_model(config, experiment, member, round_ - 1))),
    }


# ------------------------------------------------------------------------------------------ concatenations
def codc_concatenation(config: dict, experiment: str) -> str:
    """The concatenation of an experiment's members after its last round."""
    return format_model_name(experiment, round=config["codc"][experiment]["rounds"], member=CONCAT)


def concatenations(config: dict) -> dict[str, list[str]]:
    """Concatenated models and their members: the config's, then each CODC experiment's after its last round."""
    named = {name: list(members) for name, members in config["concatenations"].items()}
    for name, experiment in config["codc"].items():
        named[codc_concatenation(config, name)] = [codc_member_model(config, name, member, experiment["rounds"])
                                                   for member in experiment["members"]]
    return named


# ---------------------------------------------------------------------------------------- tracks and tables
def leaderboard_models(config: dict) -> list[str]:
    """The leaderboard's rows, in order: configured models, CODC members after their last round, concatenations."""
    return configured_models(config) + codc_final_models(config) + list(concatenations(config))


def imagenet_linear_models(config: dict) -> list[str]:
    """The legacy ImageNet track, when enabled, probes every row with a trunk (not the concatenations)."""
    if not config["evaluation"]["imagenet_linear"]["enabled"]:
        return []
    return configured_models(config) + codc_final_models(config)


def detection_models(config: dict) -> list[str]:
    """The rows that get a detector (config key evaluation.voc07_detection.models): 'auto' = the configured models
    and the members of the last concatenation; 'all' = every row with a trunk; or a list of rows."""
    setting = config["evaluation"]["voc07_detection"]
    if not setting["enabled"]:
        return []
    trunks = configured_models(config) + codc_final_models(config)
    if setting["models"] == "all":
        return trunks
    named = concatenations(config)
    if setting["models"] == "auto":
        last = named[list(named)[-1]] if named else []
        return configured_models(config) + [m for m in last if m in trunks and m not in configured_models(config)]
    for name in setting["models"]:
        if name in named:
            raise ValueError(f"config key 'evaluation.voc07_detection.models': {name!r} is a concatenation of "
                             "features; it has no trunk, so it cannot be a detection backbone. Name its members")
        if name not in trunks:
            raise ValueError(f"config key 'evaluation.voc07_detection.models': {name!r} is not a leaderboard model "
                             f"with a trunk (one of {trunks})")
    return list(setting["models"])


def model_tracks(config: dict) -> dict[str, list[str]]:
    """The tracks each leaderboard row is evaluated on."""
    tracks = {model: list(TRACKS) for model in leaderboard_models(config)}
    for model in imagenet_linear_models(config):
        tracks[model].append("imagenet_linear")
    for model in detection_models(config):
        tracks[model].append("voc07_detection")
    return tracks


SUBMITTED_TRACKS = ("voc07_svm", "voc07_lowshot", "places205_linear", "voc07_detection")


def submission_spec(config: dict, model: str, track_files: TrackFiles,
                    scores_file: Callable[[str], str]) -> dict[str, dict[str, str]]:
    """What one row's submission is built from: per submitted track, result file -> the file of test scores,
    predictions or detections behind it (empty for a track the row is not evaluated on)."""
    tracks = model_tracks(config)[model]
    return {track: {result: scores_file(result) for result in track_files(model, track)} if track in tracks else {}
            for track in SUBMITTED_TRACKS}


def evaluation_files(config: dict, track_files: TrackFiles) -> dict[str, dict[str, list[str]]]:
    """Leaderboard row -> track -> its result files (the leaderboard's input, in row order)."""
    return {model: {track: track_files(model, track) for track in tracks}
            for model, tracks in model_tracks(config).items()}


def ablation_entries(config: dict, track_files: TrackFiles) -> list[list]:
    """The cells of the seed's Table 2, [experiment, member, stage, the VOC07 SVM result files of the model that
    fills it]: each member before and after the experiment, the concatenation, and the control experiment's."""
    cells = []
    for experiment in config["ablation"]["experiments"]:
        members, rounds = config["codc"][experiment]["members"], config["codc"][experiment]["rounds"]
        for member in members:
            cells.append([experiment, member, "before", codc_member_model(config, experiment, member, 0)])
            cells.append([experiment, member, "after", codc_member_model(config, experiment, member, rounds)])
        cells.append([experiment, members[0], "concatenate", codc_concatenation(config, experiment)])
        control = config["ablation"]["controls"].get(experiment)
        if control:
            for member in config["codc"][control]["members"]:
                final = codc_member_model(config, control, member, config["codc"][control]["rounds"])
                cells.append([experiment, member, "control_after", final])
            cells.append([experiment, members[0], "control_concatenate", codc_concatenation(config, control)])
    return [[*cell, track_files(model, "voc07_svm")] for *cell, model in cells]


def dc_vs_odc_spec(config: dict, *, model_file: Callable[[str], str], benchmark_file: Callable[[str, str], str],
                   track_files: TrackFiles) -> dict:
    """Per DC/ODC model: its method, model file, training benchmark, SVM results, and the same of each snapshot,
    for the time-to-accuracy table and plot."""
    return {
        model: {
            "method": config["models"][model]["method"],
            "model": model_file(model),
            "benchmark": benchmark_file("pretrain", model),  # the training job's (stage, job)
            "voc07_svm": track_files(model, "voc07_svm"),
            "voc07_lowshot": track_files(model, "voc07_lowshot"),
            "snapshots": {snapshot: {"model": model_file(snapshot), "voc07_svm": track_files(snapshot, "voc07_svm")}
                          for snapshot in snapshot_models(config, model)},
        }
        for model in models_with_method(config, "dc", "odc")
    }


def dc_vs_odc_files(spec: dict) -> list[str]:
    """The files a :func:`dc_vs_odc_spec` names."""
    files = []
    for entry in spec.values():
        files += [entry["model"], entry["benchmark"], *entry["voc07_svm"], *entry["voc07_lowshot"]]
        for snapshot in entry["snapshots"].values():
            files += [snapshot["model"], *snapshot["voc07_svm"]]
    return files


def has_dc_vs_odc(config: dict) -> bool:
    """The DC vs ODC table exists when the config has both methods."""
    return {config["models"][model]["method"] for model in models_with_method(config, "dc", "odc")} == {"dc", "odc"}


# ------------------------------------------------------------------------------------------- params per job
def data_roots(config: dict, embedded_dir: str) -> dict[str, str]:
    """The roots of imagenet, voc07 and places205, in the real on-disk layouts: the user's data sets, or the
    embedded build's folders under ``embedded_dir``."""
    data = config["data"]
    if data["source"] == "embedded":
        return {dataset: f"{embedded_dir}/{folder}" for dataset, folder in EMBEDDED_ROOTS.items()}
    return {dataset: data[f"{dataset}_root"] for dataset in EMBEDDED_ROOTS}


def svm_options(config: dict, track: str) -> dict:
    """The options of one layer's SVM job of ``track`` (voc07_svm, voc07_lowshot): the costs, not the layers (a
    new layer is a new job), nor the low-shot draw (the samples file is the job's input)."""
    return {key: config["evaluation"][track][key] for key in SVM_OPTIONS}


def lowshot_draw_options(config: dict) -> dict:
    """What decides one k's low-shot samples (one job per k), not the list of k: each (k, sample, class) has its own
    random stream (evaluation/lowshot.py), so adding a k adds that k's job and leaves the drawn ones as they were."""
    return {key: config["evaluation"]["voc07_lowshot"][key] for key in LOWSHOT_DRAW_OPTIONS}


def split_dataset(split: str) -> str:
    """The data set (voc07, places205) of a feature split."""
    return FEATURE_SPLITS[split][0]


def dataset_splits() -> dict[str, list[str]]:
    """The feature splits of each data set, in FEATURE_SPLITS order: one features job per model and data set."""
    splits: dict[str, list[str]] = {}
    for split, (dataset, _) in FEATURE_SPLITS.items():
        splits.setdefault(dataset, []).append(split)
    return splits


def probes_online(config: dict, model: str) -> bool:
    """Whether the Places205 probe of ``model`` runs frozen trunks over the images (online mode, the reference
    pipeline; a concatenation runs its members' trunks), or trains on its extracted features (cached mode, a
    labelled approximation: no crop or flip, squashed images)."""
    return config["evaluation"]["places205_linear"]["mode"] == "online"


def linear_probe_inputs(config: dict, model: str, model_file: Callable[[str], str],
                        features_file: Callable[[str, str], str]) -> dict[str, str | list[str]]:
    """The Places205 probe's input files: online, ``model``'s model file, or a concatenation's members' model
    files in member order (``members``); cached, its Places205 train and val feature files."""
    if not probes_online(config, model):
        return {subset: features_file(model, f"places205_{subset}") for subset in ("train", "val")}
    members = concatenations(config).get(model)
    if members:
        return {"members": [model_file(member) for member in members]}
    return {"model": model_file(model)}


def probe_feature_options(config: dict, online: bool) -> dict:
    """What a probe takes of ``features``: the images' sizes and the pooling when it runs the trunk itself; nothing
    when it reads feature files (their extraction job follows ``features``)."""
    return {key: config["features"][key] for key in PROBE_FEATURE_OPTIONS} if online else {}
