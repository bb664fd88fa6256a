"""Upload jobs, across the worker boundary. Server side: submit and run (``uploads``), job
files beside the repository (``store``), worker processes (``workers``, ``folder``). Worker
side, the only place TensorFlow is imported: ``in_worker``."""
