"""A source's reference answers computed beside its fold and export, so that verifying
does not wait for them.

TensorFlow runs a model's kernels without the GIL while the exporters and the ONNX
folder mostly hold it, so on two cores the two overlap. The probes
are made once, here, and the pipeline later asks the source for the same ones
(``Source.probes``), then for these answers (``Source.early_reference``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from folding.options import VerifyOptions

Run = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass
class EarlyReference:
    """``run(probes)`` in a thread of its own: the probes for ``verify``, how they were
    made (``described``) and the answers to come."""

    verify: VerifyOptions
    probes: list[np.ndarray]
    described: str
    future: Future

    @classmethod
    def start(
        cls,
        make_probes: Callable[[VerifyOptions], tuple[list[np.ndarray], str]],
        verify: VerifyOptions,
        run: Run,
        name: str = "reference",
    ) -> EarlyReference | None:
        """None when the probes cannot be made now: then they are made, and fail, in
        the verifying stage, as they would without this."""
        try:
            probes, described = make_probes(verify)
        except Exception:  # ProbeError and whatever a user's file raises: said later
            return None
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        future = pool.submit(run, probes)
        pool.shutdown(wait=False)
        return cls(verify, probes, described, future)

    def serves(self, verify: VerifyOptions) -> bool:
        """Whether these are the probes ``verify`` asks for."""
        return self.verify is verify

    def answers(self, probes: object) -> list[np.ndarray] | None:
        """The answers, if ``probes`` are these probes (else None)."""
        return self.future.result() if probes is self.probes else None
