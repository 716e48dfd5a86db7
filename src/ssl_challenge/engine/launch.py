"""Entry point of one torchrun worker: ``python -m ssl_challenge.engine.launch request.json``.

The request is written by ``pretraining.launch_torchrun``; every worker runs the same pretraining (the loop splits each
global batch across ranks and averages gradients).
"""
from __future__ import annotations

import json
import sys

from ..engine import distributed
from ..pretraining import run_pretraining


def main(request_path: str) -> None:
    with open(request_path) as handle:
        request = json.load(handle)

    def log(message: str) -> None:
        if distributed.rank() == 0:
            print(message, flush=True)

    try:
        run_pretraining(request, log)
    finally:
        if distributed.is_initialized():
            distributed.dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
