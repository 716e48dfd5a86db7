"""CLS's options and declaration (torch-free: ``spec.py``); the method is ``cls.py``.

CLS trains on pseudo-labels that the workflow computes before its job: k-means of the concatenated features of
``label_models`` (``pseudo_labels``), passed to the method as ``labels_path``."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.config import ConfigError
from .spec import LABELS, InputFile, MethodSpec, PseudoLabels


@dataclass(frozen=True)
class ClsOptions:
    num_clusters: int  # k of the pseudo-labels (the head's classes); the label file must have been made with it
    labels_path: str = ""  # the pseudo-label file (.npz); injected by the workflow
    label_models: tuple[str, ...] = ()  # the models whose features are clustered (read by the workflow)
    pca_dims: int = 256  # PCA-whitening dimensions before k-means (read by the workflow); reference 256
    mixup_alpha: float = 1.0  # lam ~ Beta(alpha, alpha); 0 disables mixup (lam = 1)
    head_init_std: float = 0.01  # normal init of the classifier (bias 0); reference 0.01


def check(options: ClsOptions, where: str) -> None:
    if options.num_clusters < 2:
        raise ConfigError(f"{where}.num_clusters: need at least 2 clusters, got {options.num_clusters}")
    if options.mixup_alpha < 0:
        raise ConfigError(f"{where}.mixup_alpha: expected >= 0, got {options.mixup_alpha}")
    if options.pca_dims < 1:
        raise ConfigError(f"{where}.pca_dims: expected >= 1, got {options.pca_dims}")
    if not options.label_models:
        raise ConfigError(f"{where}.label_models: name the models whose features give the pseudo-labels")


def pseudo_labels(options: ClsOptions) -> PseudoLabels:
    return PseudoLabels(models=options.label_models, num_clusters=options.num_clusters, pca_dims=options.pca_dims,
                        models_option="label_models")


SPEC = MethodSpec(module="cls", options=ClsOptions, check=check, input_files=(InputFile("labels_path", LABELS),),
                  pseudo_labels=pseudo_labels, codc_pretext=True)
