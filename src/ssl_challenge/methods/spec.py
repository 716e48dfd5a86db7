"""What a method declares about itself, without torch: its options, the files it reads, its place in CODC.

Every method has two modules: ``<module>.py`` builds the torch model, ``<module>_options.py`` holds its options
dataclass and its :class:`MethodSpec` as ``SPEC``. The planner (``plan/``) and the rules read the specs at
DAG-build time through the registry (``methods/__init__.py``), so they must not import torch; the method module
imports its options module, so both read the same defaults and checks. docs/adding-a-method.md is the recipe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..core.config import from_dict

# The kinds of input files a method option may name (InputFile.kind); each is also the name of the file's input
# in a CODC round's rule (a wrapped method's files are named ``<method>_<kind>``: cls_labels).
LABELS = "labels"  # a pseudo-label file (.npz of clustering.labels.save_labels) that the workflow computes
PREVIOUS_WEIGHTS = "weights"  # a model file of an earlier training (a CODC member's previous round)
EXTERNAL_WEIGHTS = "checkpoint"  # a checkpoint trained elsewhere, named by the user
INPUT_KINDS = (LABELS, PREVIOUS_WEIGHTS, EXTERNAL_WEIGHTS)


@dataclass(frozen=True)
class InputFile:
    """A method option that names a file the method reads (its content is part of the run's identity)."""

    option: str
    kind: str  # one of INPUT_KINDS


@dataclass(frozen=True)
class PseudoLabels:
    """The pseudo-labels a method asks the workflow for: k-means (``num_clusters``) of the concatenated,
    L2-normalised features of ``models``, PCA-whitened to ``pca_dims`` first (``stages.pseudo_labels``). The
    workflow passes the file in the method's ``LABELS`` option."""

    models: tuple[str, ...]
    num_clusters: int
    pca_dims: int
    models_option: str  # the option that names ``models`` (errors name it)

    def job_options(self, seed: int) -> dict:
        """The options of the job that computes the labels (``stages.pseudo_labels.make_pseudo_labels``)."""
        return {"num_clusters": self.num_clusters, "pca_dims": self.pca_dims, "seed": seed}


@dataclass(frozen=True)
class Wrapped:
    """A method that a method builds around itself (a CODC member's own pretext method): the option that holds
    its options, its name and those options."""

    option: str
    method: str
    options: dict


@dataclass(frozen=True)
class MethodSpec:
    """One method's declaration (``SPEC`` of its ``<module>_options.py``).

    - ``options``: a frozen dataclass whose defaults are the method's; ``core.config.from_dict`` rejects unknown
      keys and wrong types. ``check(options, where)`` then raises ``ConfigError`` naming ``{where}.<option>`` for
      values that cannot work (checks that need the number of training samples stay in the method's ``build``).
    - ``input_files``: the options that name files (see the kinds above).
    - ``pseudo_labels(options)``: the labels the workflow computes for a configured model of this method.
    - ``wraps(options)``: the method built inside this one, if any (its module is part of the run's code).
    - ``codc_pretext``: whether a CODC member may keep this method as its own pretext loss.
    - ``converts``: the method's job converts a checkpoint instead of training (``<module>.convert``).
    """

    module: str  # methods/<module>.py: build(backbone, options: dict, num_samples) -> nn.Module
    options: type
    check: Callable[[Any, str], None] | None = None
    input_files: tuple[InputFile, ...] = ()
    pseudo_labels: Callable[[Any], PseudoLabels] | None = None
    wraps: Callable[[Any], Wrapped | None] | None = None
    codc_pretext: bool = False
    converts: bool = False

    def __post_init__(self) -> None:
        unknown = [entry.kind for entry in self.input_files if entry.kind not in INPUT_KINDS]
        if unknown:
            raise ValueError(f"MethodSpec of {self.module}: input file kinds {unknown}; expected some of "
                             f"{INPUT_KINDS}")
        fields = getattr(self.options, "__dataclass_fields__", None)
        if fields is None:
            raise ValueError(f"MethodSpec of {self.module}: options must be a dataclass, got {self.options!r}")
        if self.pseudo_labels is not None and not any(entry.kind == LABELS for entry in self.input_files):
            raise ValueError(f"MethodSpec of {self.module}: pseudo_labels needs an input file option of kind "
                             f"{LABELS!r} to receive them")
        missing = [entry.option for entry in self.input_files if entry.option not in fields]
        if missing:
            raise ValueError(f"MethodSpec of {self.module}: input file options {missing} are not fields of "
                             f"{self.options.__name__}")

    def parse(self, options: dict, where: str = "method_options") -> Any:
        """``options`` as the method's options dataclass, checked: the one validation of a method's options (the
        config checks call it before any job runs, the method's ``build`` when it is built). Raises
        ``ConfigError`` naming ``{where}.<option>``."""
        parsed = from_dict(self.options, options, where=where)
        if self.check is not None:
            self.check(parsed, where)
        return parsed
