"""Write tests/data/torch/*.onnx: tiny CNNs exported by PyTorch's two ONNX exporters.

Run with a Python that has torch (CPU), onnx and onnxscript, kept outside the
project's environment (torch is too large for it):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch onnx onnxscript numpy
    /tmp/torchvenv/bin/python bench/make_torch_onnx.py [--out tests/data/torch] [--only NAME,...]

The checked-in files were written by torch 2.13.0+cpu, onnx 1.23.2, onnxscript
0.7.2 (each file's ``producer_name``/``producer_version`` says which exporter).
Rerunning with other versions writes other files; tests/folding/test_torch_onnx.py
checks only what any version must give (every BN folded, the answers unchanged).

Each model is built in eval mode with every BatchNormalization's statistics and
affine parameters set by hand to values far from the defaults (an untrained BN is
an identity and folds to nothing visible). Each is written three ways:

* ``*_ts13.onnx``, ``*_ts17.onnx``: the TorchScript exporter (``dynamo=False``) at
  opsets 13 and 17, ``training=PRESERVE`` so that it keeps each BatchNormalization
  (in ``EVAL`` mode it fuses Conv + BN itself, leaving nothing to fold);
* ``*_dynamo18.onnx``: the dynamo exporter (``dynamo=True``) at opset 18 with
  ``optimize=False``: the graph as the exporter translates it (computed zero
  biases: ``Expand`` of a constant to ``Shape(weight)``), before onnxscript's
  optimiser, whose ``fuse_batchnorm`` rule (in this version) merges every BN into
  its Conv / Gemm itself.

Every file has a dynamic batch axis on its input ``input``. The IR version is
left as the exporter wrote it: files newer than ONNX Runtime reads go through
the loader's lowering (``folding.sources.onnx.ir``).

``variants/`` holds ``conv_bn_relu`` as users also export it (``--variants``):
``model.half()`` through both exporters (``*_half``), the TorchScript exporter at
opset 11, without constant folding (``*_nofold``) and with every module a local
function (``export_modules_as_functions=True``, ``*_functions``).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent


class ConvBnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


class Depthwise(nn.Module):
    """MobileNet's block: pointwise, depthwise (groups == channels), pointwise."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU6(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU6(),
            nn.Conv2d(8, 12, 1, bias=False),
            nn.BatchNorm2d(12),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.body(x), 1), 1)


class Residual(nn.Module):
    """ResNet's basic block with a projection shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.project = nn.Conv2d(3, 8, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.bn3(self.project(x)))


class LinearBn1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(10, 16),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Linear(16, 8, bias=False),
            nn.BatchNorm1d(8),
            nn.ReLU(),
            nn.Linear(8, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ConvTransposeBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 4, 2, stride=2),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.ConvTranspose2d(4, 2, 3, padding=1, bias=False),
            nn.BatchNorm2d(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class LinearNorm(nn.Module):
    """timm LeViT's linear-norm: ``Linear(bias=False)`` whose tokens are flattened into
    the batch for a ``BatchNorm1d`` and reshaped back (``reshape_as``)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 8, bias=False)
        self.bn = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        y = self.bn(y.flatten(0, 1)).reshape_as(y)
        return self.head(torch.relu(y))


class FrozenBatchNorm2d(nn.Module):
    """torchvision.ops.misc.FrozenBatchNorm2d's forward (fixed statistics as buffers)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))
        self.num_features = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.reshape(1, -1, 1, 1)
        b = self.bias.reshape(1, -1, 1, 1)
        rv = self.running_var.reshape(1, -1, 1, 1)
        rm = self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + 1e-5).rsqrt()
        return x * scale + (b - rm * scale)


class FrozenBn(nn.Module):
    """A detection backbone's convolutions with FrozenBatchNorm2d (decomposed into
    ``Mul`` + ``Add`` of a scale and shift computed from the buffers)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            FrozenBatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
            FrozenBatchNorm2d(8),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DenseConcat(nn.Module):
    """DenseNet's and MixConv's joins: a BN after ``cat`` of one convolution's output
    (the dynamo exporter writes an ``Identity``) and after ``cat`` of two convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.small = nn.Conv2d(8, 4, 3, padding=1, bias=False)
        self.large = nn.Conv2d(8, 6, 5, padding=2, bias=False)
        self.bn2 = nn.BatchNorm2d(10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(torch.cat([self.stem(x)], 1)))
        return self.bn2(torch.cat([self.small(y), self.large(y)], 1))


class IdentityBranch(nn.Module):
    """RepVGG's training-time block: ``bn(conv3x3(x)) + bn(conv1x1(x)) + bn(x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.wide = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.narrow = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.identity = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        return torch.relu(self.wide(y) + self.narrow(y) + self.identity(y))


class RepMixer(nn.Module):
    """timm's MobileOne and FastViT blocks: a sum of branches started at ``0``
    (``bn(x) + 0 + bn(conv(x))``), then ``x + (mixer(x) - norm(x))``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.identity = nn.BatchNorm2d(8)
        self.conv = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.mixer = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)
        )
        self.norm = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        out = 0
        out = self.identity(y) + out
        y = torch.relu(out + self.conv(y))
        return y + (self.mixer(y) - self.norm(y))


MODELS = {
    "conv_bn_relu": (ConvBnRelu, (3, 16, 16)),
    "depthwise": (Depthwise, (3, 16, 16)),
    "residual": (Residual, (3, 12, 12)),
    "linear_bn1d": (LinearBn1d, (10,)),
    "convtranspose_bn": (ConvTransposeBn, (3, 8, 8)),
    "linear_norm": (LinearNorm, (5, 6)),
    "frozen_bn": (FrozenBn, (3, 8, 8)),
    "dense_concat": (DenseConcat, (3, 8, 8)),
    "identity_branch": (IdentityBranch, (3, 8, 8)),
    "rep_mixer": (RepMixer, (3, 8, 8)),
}


def with_statistics(module: nn.Module, seed: int) -> nn.Module:
    """Every BN's running statistics and affine parameters set to seeded values far
    from an untrained BN's (mean 0, variance 1, gamma 1, beta 0); eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)):
                n = layer.num_features
                layer.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                layer.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.2)
                layer.weight.copy_(torch.rand(n, generator=generator) * 1.5 + 0.25)
                layer.bias.copy_(torch.randn(n, generator=generator) * 0.3)
    return module.eval()


def export(module: nn.Module, shape: tuple[int, ...], path: Path, exporter: str, **options) -> None:
    """``options``: more keyword arguments of the TorchScript exporter; ``half``: the
    module and its input in float16."""
    sample = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    if options.pop("half", False):
        module, sample = module.half(), sample.half()
    if exporter == "dynamo18":
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.onnx.export(
            module,
            (sample,),
            dynamo=True,
            opset_version=18,
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes={"x": {0: batch}},
            optimize=False,
        )
        program.save(str(path))
        return
    opset = int(exporter.removeprefix("ts"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (sample,),
            str(path),
            dynamo=False,
            opset_version=opset,
            training=torch.onnx.TrainingMode.PRESERVE,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            **options,
        )


VARIANTS = {
    "conv_bn_relu_ts17_half": ("ts17", {"half": True}),
    "conv_bn_relu_dynamo18_half": ("dynamo18", {"half": True}),
    "conv_bn_relu_ts11": ("ts11", {}),
    "conv_bn_relu_ts17_nofold": ("ts17", {"do_constant_folding": False}),
    "conv_bn_relu_ts17_functions": ("ts17", {"export_modules_as_functions": True}),
}


def export_variants(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, (exporter, options) in VARIANTS.items():
        torch.manual_seed(0)
        module = with_statistics(ConvBnRelu(), 0)
        export(module, MODELS["conv_bn_relu"][1], out / f"{name}.onnx", exporter, **options)
        print(f"{name}.onnx  {(out / f'{name}.onnx').stat().st_size:>7} bytes")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "torch")
    parser.add_argument("--only", help="comma-separated model names (default: all)")
    parser.add_argument("--variants", action="store_true", help="write OUT/variants/ only")
    args = parser.parse_args()
    if args.variants:
        export_variants(args.out / "variants")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    import onnx

    for seed, (name, (build, shape)) in enumerate(MODELS.items()):
        if args.only and name not in args.only.split(","):
            continue
        torch.manual_seed(seed)
        module = with_statistics(build(), seed)
        for exporter in ("ts13", "ts17", "dynamo18"):
            path = args.out / f"{name}_{exporter}.onnx"
            export(module, shape, path, exporter)
            proto = onnx.load(str(path))
            bns = sum(node.op_type == "BatchNormalization" for node in proto.graph.node)
            print(
                f"{path.name:<32} IR {proto.ir_version:>2}  opset "
                f"{max(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')):>2}"
                f"  {bns} BatchNormalization  {path.stat().st_size:>7} bytes"
            )


if __name__ == "__main__":
    main()
