"""One module per workflow stage: what a ``workflow/scripts`` adapter calls. A stage reads its inputs, runs the
building blocks below it and writes its outputs atomically."""
