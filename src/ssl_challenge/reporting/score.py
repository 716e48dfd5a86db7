"""Score the challenge's submission files from the command line (see :mod:`.submission` for the formats).

    python -m ssl_challenge.reporting.score voc07 preds.json --voc07-root data/VOCdevkit
    python -m ssl_challenge.reporting.score lowshot voc07_lowshot_sample*_k*.json --voc07-root data/VOCdevkit
    python -m ssl_challenge.reporting.score places205 places205_val.json --places205-root data/places205
    python -m ssl_challenge.reporting.score detection detections.zip --voc07-root data/VOCdevkit

The result is printed as JSON (and written atomically to ``--output`` when given). A malformed file exits with
status 1 and one line naming the file, line and what was expected.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from ..evaluation import submission_formats as submission
from ..core.io import write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ssl_challenge.reporting.score", description=__doc__.split("\n\n")[0])
    formats = parser.add_subparsers(dest="format", required=True)
    for name, help_text in (("voc07", "VOC07 classification scores (JSON): mAP"),
                            ("lowshot", "VOC07 low-shot scores, one JSON per sample and k: track score"),
                            ("detection", "VOC07 detections (zip of comp4_det_test_<class>.txt): 11-point mAP")):
        command = formats.add_parser(name, help=help_text)
        command.add_argument("files", nargs="+" if name == "lowshot" else 1, help="submission file(s)")
        command.add_argument("--voc07-root", required=True, help="the VOCdevkit folder (holding VOC2007/)")
        command.add_argument("--classes", nargs="+", default=None,
                             help="classes to score (default: those of ImageSets/Main on disk)")
        command.add_argument("--output", help="also write the result to this JSON file")
    command = formats.add_parser("places205", help="Places205 val predictions (JSON path -> class): top-1")
    command.add_argument("files", nargs=1, help="submission file")
    command.add_argument("--places205-root", required=True, help="the Places205 root (holding "
                                                                 "trainvalsplit_places205/)")
    command.add_argument("--output", help="also write the result to this JSON file")
    return parser


def score(arguments: argparse.Namespace) -> dict:
    if arguments.format == "voc07":
        return submission.score_voc07_classification(arguments.files[0], arguments.voc07_root, arguments.classes)
    if arguments.format == "lowshot":
        return submission.score_voc07_lowshot(arguments.files, arguments.voc07_root, arguments.classes)
    if arguments.format == "detection":
        return submission.score_voc07_detection(arguments.files[0], arguments.voc07_root, arguments.classes)
    return submission.score_places205(arguments.files[0], arguments.places205_root)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        result = score(arguments)
    except (ValueError, FileNotFoundError) as error:
        print(f"score {arguments.format}: error: {error}", file=sys.stderr)
        return 1
    if arguments.output:
        write_json_atomic(arguments.output, result)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
