"""CODC's options and declaration (torch-free: ``spec.py``), and how an experiment of the config's ``codc``
section becomes each member's options in a round; the method is ``codc.py``.

The planner (``plan.planning``) decides which rounds and members exist and what their models are called; this
module says what a member's run is given: its own method and options, the round's initial labels (k-means of
the peers' previous-round features, or of its own for the control) and its previous-round weights."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.config import ConfigError, from_dict
from .online_clustering_options import OnlineClusteringOptions, check_clustering_options
from .spec import LABELS, PREVIOUS_WEIGHTS, InputFile, MethodSpec, Wrapped

CONTROL = "label_source: self"  # the setting of a control experiment (each member clusters its own features)


@dataclass(frozen=True)
class CODCOptions(OnlineClusteringOptions):
    """The online-clustering options (num_clusters, memory_momentum, min_cluster_size, neck_hidden_dim,
    neck_out_dim, neck_dropout, init_std, reweight, reweight_power, centroid_update, centroid_update_interval,
    split_iterations; defaults and reference values in ``online_clustering_options.py``) plus the member's own."""

    base_method: str = ""  # required: the member's own pretext method (one whose spec has codc_pretext)
    base_options: dict = field(default_factory=dict)  # that method's method_options
    labels_path: str = ""  # required: the round's initial labels (.npz of clustering.labels.save_labels); injected
    initial_weights: str = ""  # the member's previous-round model.pth (backbone); "" starts from scratch
    loss_weight: float = 1.0  # weight of the online-clustering loss added to the base loss
    seed: int = 0  # mixed with the run's seed into the memory's random draws (cluster splits)


def check(options: CODCOptions, where: str) -> None:
    from . import pretext_methods  # the registry loads this module by name: no import cycle at load time

    check_clustering_options(options, where)
    if options.base_method not in pretext_methods():
        raise ConfigError(f"{where}.base_method: expected one of {pretext_methods()}, got {options.base_method!r}")
    if not options.labels_path:
        raise ConfigError(f"{where}.labels_path: a CODC member needs the round's initial labels (the workflow "
                          "injects the file)")
    if options.loss_weight < 0:
        raise ConfigError(f"{where}.loss_weight: expected >= 0, got {options.loss_weight}")


def base_method(options: CODCOptions) -> Wrapped:
    return Wrapped("base_options", options.base_method, options.base_options)


SPEC = MethodSpec(module="codc", options=CODCOptions, check=check, wraps=base_method,
                  input_files=(InputFile("labels_path", LABELS), InputFile("initial_weights", PREVIOUS_WEIGHTS)))


# ------------------------------------------------------------------------------------ an experiment's rounds
def check_experiment(experiment: dict, where: str) -> None:
    """The online-clustering options of an experiment (``codc.<name>``, validated by the schema otherwise)."""
    check_clustering_options(from_dict(OnlineClusteringOptions, experiment["online_options"],
                                       where=f"{where}.online_options"), f"{where}.online_options")


def round_options(experiment: dict, base_method: str, base_options: dict, labels_path: str,
                  initial_weights: str) -> dict:
    """The method_options of one member in one round of ``experiment`` (a ``codc.<name>`` entry, defaults
    filled): its own method and options, the round's labels file and its previous-round model file."""
    return {
        **experiment["online_options"],
        "base_method": base_method,
        "base_options": base_options,
        "labels_path": labels_path,
        "initial_weights": initial_weights,
        "num_clusters": experiment["num_clusters"],
        "loss_weight": experiment["loss_weight"],
        "seed": experiment["seed"],
    }


def feature_sources(experiment: dict, member: str) -> list[str]:
    """The members whose previous-round features give ``member``'s initial labels: its peers, or itself in a
    control experiment."""
    if is_control(experiment):
        return [member]
    return [peer for peer in experiment["members"] if peer != member]


def is_control(experiment: dict) -> bool:
    return experiment["label_source"] == "self"


def round_label_options(experiment: dict, round_: int) -> dict:
    """The options of the job that computes a round's initial labels (``stages.pseudo_labels``): the experiment's
    k and PCA dims, and its seed plus the round."""
    return {"num_clusters": experiment["num_clusters"], "pca_dims": experiment["pca_dims"],
            "seed": experiment["seed"] + round_}
