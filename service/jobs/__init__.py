"""Upload jobs, across the worker boundary. Server side: the checks, staging and version
number of an upload (``submit``), running it and committing its version (``runner``),
waiting, cancelling and the state of versions folding or failed (``uploads``), job files
beside the repository (``store``), the pool that hands jobs to worker processes
(``worker_pool``, ``workers``). Worker side, the only place TensorFlow is imported:
``in_worker``."""
