"""Per-model-version inference statistics, in the shape of Triton's statistics extension.

``GET /v2/models/{name}/stats`` answers (https://github.com/triton-inference-server/
server/blob/main/docs/protocol/extension_statistics.md)::

    {"model_stats": [{"name": $string, "version": $string,
                      "last_inference": $number (ms since epoch),
                      "inference_count": $number (rows), "execution_count": $number (runs),
                      "inference_stats": {"success": $duration_stat, "fail": $duration_stat,
                                          "queue": $duration_stat,
                                          "compute_input": $duration_stat,
                                          "compute_infer": $duration_stat,
                                          "compute_output": $duration_stat},
                      "batch_stats": [{"batch_size": $number,
                                       "compute_input": $duration_stat,
                                       "compute_infer": $duration_stat,
                                       "compute_output": $duration_stat}]}]}

with ``$duration_stat = {"count": $number, "ns": $number}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStat:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    name: str
    version: int
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchStat] = field(default_factory=dict)

    def record_execution(
        self, rows: int, requests: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One session run that served ``requests`` requests totalling ``rows`` rows."""
        self.execution_count += 1
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)
        self.compute_input.add(input_ns, requests)
        self.compute_infer.add(infer_ns, requests)
        self.compute_output.add(output_ns, requests)
        batch = self.batches.setdefault(rows, BatchStat())
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": str(self.version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": stat.compute_input.as_dict(),
                    "compute_infer": stat.compute_infer.as_dict(),
                    "compute_output": stat.compute_output.as_dict(),
                }
                for size, stat in sorted(self.batches.items())
            ],
        }
