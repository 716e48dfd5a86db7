"""The foundation every layer may import: files written atomically, config objects and their errors, numerics
and threads, devices, job logging, code digests and run-folder file names. Imports nothing else of the package."""
