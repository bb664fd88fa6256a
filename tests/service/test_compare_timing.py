"""``:compare`` times the folded and the unfolded model like with like."""

import httpx
import numpy as np

from service.core.timing import interleaved
from service.runtime.sessions import Runtime


def test_server_ratio_matches_an_in_process_timing_of_the_same_files(server, digits, tmp_path):
    rows = digits.data[:8].astype(np.float32)
    answers = []
    for _ in range(3):
        reply = httpx.post(
            f"{server.url}/v1/models/digits:compare",
            json={"instances": rows.tolist(), "repeats": 200, "return_outputs": False},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        answers.append(reply.json()["latency"])
    latency = answers[-1]
    assert latency["repeats"] >= 200
    low, high = latency["unfolded_over_folded_iqr"]
    assert low <= latency["unfolded_over_folded"] <= high
    assert set(latency["iqr_ms"]) == {"folded", "unfolded"}
    served = float(np.median([answer["unfolded_over_folded"] for answer in answers]))

    version = server.models_dir / "digits" / "1"
    runtime = Runtime(device="cpu", intra_op_threads=2)  # the server's defaults
    folded = runtime.load(version / "model.onnx")
    unfolded = runtime.load(version / "unfolded.onnx", unfolded=True)
    feed = {folded.inputs[0].name: rows}
    local = interleaved(
        {"folded": lambda: folded.run(feed), "unfolded": lambda: unfolded.run(feed)},
        min_rounds=500,
    )
    # the two timings of the same two files agree (timing the folded model through the
    # batching queue and the unfolded one directly once made the ratio 0.68 for a true 1.9).
    # Which model is faster is a benchmark's question (bench/), not this test's.
    assert 1 / 2 <= served / local.ratio.median <= 2, (served, local.ratio.median)
