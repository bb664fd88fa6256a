"""How ONNX folding time grows with the graph: a table over chains of 400..6400 nodes.

    .venv/bin/python bench/onnx_fold_scaling.py [--sizes 400,800,1600,3200,6400] [--repeats 3]

Each chain repeats one block of eight nodes, the patterns an exporter leaves:
``Conv -> BatchNormalization -> Relu -> Conv -> Mul -> Add (a decomposed BN) ->
Relu -> Identity``, on a small ``[1, 8, 4, 4]`` tensor, so that the time is the
graph work (lookups, rewiring, writing back), not the arithmetic on weights.
Printed per size: the median of ``--repeats`` runs of ``fold_onnx``, and its ratio
to the size before (near-linear folding: about 2x per doubling).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from folding.onnx_graph import fold_onnx  # noqa: E402

CHANNELS = 8
BLOCK_NODES = 8


def chain(nodes: int, seed: int = 0) -> onnx.ModelProto:
    """A chain of about ``nodes`` nodes (whole blocks of ``BLOCK_NODES``)."""
    rng = np.random.default_rng(seed)
    graph_nodes, initializers = [], []

    def const(name: str, shape: tuple, low: float = -1.0, high: float = 1.0) -> str:
        array = rng.uniform(low, high, shape).astype(np.float32)
        initializers.append(numpy_helper.from_array(array, name))
        return name

    tensor = "x"
    for block in range(max(nodes // BLOCK_NODES, 1)):
        p = f"b{block}"
        c = CHANNELS
        bn_inputs = [
            const(f"{p}_gamma", (c,), 0.5, 1.5),
            const(f"{p}_beta", (c,)),
            const(f"{p}_mean", (c,)),
            const(f"{p}_var", (c,), 0.5, 2.0),
        ]
        graph_nodes += [
            helper.make_node(
                "Conv", [tensor, const(f"{p}_w1", (c, c, 3, 3))], [f"{p}_c1"], pads=[1] * 4
            ),
            helper.make_node("BatchNormalization", [f"{p}_c1", *bn_inputs], [f"{p}_n1"]),
            helper.make_node("Relu", [f"{p}_n1"], [f"{p}_r1"]),
            helper.make_node("Conv", [f"{p}_r1", const(f"{p}_w2", (c, c, 1, 1))], [f"{p}_c2"]),
            helper.make_node("Mul", [f"{p}_c2", const(f"{p}_s", (1, c, 1, 1))], [f"{p}_m"]),
            helper.make_node("Add", [f"{p}_m", const(f"{p}_t", (1, c, 1, 1))], [f"{p}_a"]),
            helper.make_node("Relu", [f"{p}_a"], [f"{p}_r2"]),
            helper.make_node("Identity", [f"{p}_r2"], [f"{p}_out"]),
        ]
        tensor = f"{p}_out"
    graph = helper.make_graph(
        graph_nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, 4, 4])],
        [helper.make_tensor_value_info(tensor, TensorProto.FLOAT, [1, CHANNELS, 4, 4])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="400,800,1600,3200,6400")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"{'nodes':>6} {'BNs':>5} {'folded':>6} {'fold s':>8} {'ratio':>6}")
    previous = None
    for size in sizes:
        model = chain(size)
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = fold_onnx(model)
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        ratio = "" if previous is None else f"{median / previous:.2f}x"
        bns = 2 * len(model.graph.node) // BLOCK_NODES
        nodes = len(model.graph.node)
        print(f"{nodes:>6} {bns:>5} {len(result.folded):>6} {median:>8.3f} {ratio:>6}")
        previous = median


if __name__ == "__main__":
    main()
