"""The site file ``config/site.yaml``: where one machine keeps the real data sets, without editing a tracked file.

It is untracked (``.gitignore``); ``config/site.example.yaml`` shows every key. The Snakefile merges it over a
configuration that runs on the real data sets (``data.source: real``, as ``config/challenge.yaml``, which the
slurm profile selects), then validates the result against the schema; runs on the embedded data never read it.
A ``--config key=value`` on the command line still wins over it. Which partition and account the jobs go to is
the cluster profile's business (Snakemake profiles cannot read this file): see profiles/README.md.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..core.config import ConfigError

SITE_CONFIG = Path("config") / "site.yaml"  # relative to the working directory, as Snakemake's configfiles
# The keys a site file may set: where things are on this machine, and which conda environment its nodes need.
SITE_KEYS = {
    ("data", "imagenet_root"): str,
    ("data", "voc07_root"): str,
    ("data", "places205_root"): str,
    ("evaluation", "voc07_lowshot", "published_samples"): str,
    ("resources", "conda_env"): str,
}


def site_settings(path: str | os.PathLike) -> dict[tuple[str, ...], object]:
    """The settings of the site file at ``path`` as {key path: value}; raises :class:`ConfigError` naming the
    file and the key when a key is not a site setting or its value has the wrong type."""
    path = Path(path)
    document = yaml.safe_load(path.read_text()) or {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys (see config/site.example.yaml)")
    settings = dict(flatten(document))
    allowed = ", ".join(".".join(key) for key in SITE_KEYS)
    for key, value in settings.items():
        name = ".".join(map(str, key))
        if key not in SITE_KEYS:
            raise ConfigError(f"{path}: key '{name}' is not a site setting; a site file sets only {allowed} "
                              "(config/site.example.yaml); other keys belong in a --configfile")
        if not isinstance(value, SITE_KEYS[key]):
            raise ConfigError(f"{path}: key '{name}' = {value!r}: expected a {SITE_KEYS[key].__name__}")
    return settings


def flatten(document: dict, prefix: tuple = ()):
    """(key path, value) of every leaf of nested mappings; an empty mapping is a leaf."""
    for key, value in document.items():
        if isinstance(value, dict) and value:
            yield from flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def merge_site_config(config: dict, path: str | os.PathLike, command_line: dict | None = None) -> list[str]:
    """Merge the site file at ``path`` into ``config`` in place when ``config`` runs on the real data sets, then
    the command line's ``--config`` values again (they win). Returns the merged key names (none when the file is
    absent or the data are the embedded ones). The file's keys are checked in either case."""
    if not Path(path).is_file():
        return []
    settings = site_settings(path)
    if config.get("data", {}).get("source") != "real":
        return []
    for key, value in settings.items():
        node = config
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = value
    for key, value in dict(flatten(dict(command_line or {}))).items():
        if key in settings:
            node = config
            for part in key[:-1]:
                node = node[part]
            node[key[-1]] = value
    return [".".join(key) for key in settings]
