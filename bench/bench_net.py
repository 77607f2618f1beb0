"""Network forward benchmark: eager fp32 against the product's fast paths, same network, one run.

Usage:
    .venv/bin/python bench/bench_net.py [--width cellpose|small] [--size 512] [--batches 1 4]
        [--repeats N]

The reference is the network run as a plain PyTorch loop would run it: eager, fp32,
contiguous memory, from a numpy batch to numpy outputs. Beside it, the paths the product
itself runs (``zoo.backends``), on the same batches:

* CPU: onnxruntime (``OnnxRunner``, ``ZOO_BACKEND=onnx``). The torch backend on CPU *is*
  the eager fp32 path.
* CUDA: ``TorchRunner`` in bf16 and fp16 autocast with channels-last memory
  (``ZOO_PRECISION=bf16|fp16``) and in fp32 channels-last (the default), plus onnxruntime
  when its CUDA execution provider is installed.

Each path's outputs are compared with the reference (max abs difference of the flows and
cell probability). Writes bench/results/net.json (net_cuda.json on a GPU).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _results import Column, Run, Table  # noqa: E402

from zoo.backends import OnnxRunner, TorchRunner, export_onnx  # noqa: E402
from zoo.nets.cpnet import CPNet, NetConfig, count_parameters  # noqa: E402

WIDTHS = {"cellpose": (2, 32, 64, 128, 256), "small": (2, 16, 32, 64, 128)}
REFERENCE = "eager fp32 (reference)"
RunFn = Callable[[np.ndarray], np.ndarray]


def timed(fn: RunFn, x: np.ndarray, repeats: int) -> float:
    """Median seconds per call after two warm-up calls (each call ends on the host)."""
    for _ in range(2):
        fn(x)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def reference(net: CPNet, device: torch.device) -> RunFn:
    """The plain loop: eager fp32, contiguous, numpy in and out."""
    model = copy.deepcopy(net).to(device).eval()

    @torch.inference_mode()
    def run(batch: np.ndarray) -> np.ndarray:
        outputs, _ = model(torch.from_numpy(batch).to(device))
        return outputs.float().cpu().numpy()

    return run


def product_paths(net: CPNet, cuda: bool, work: Path) -> dict[str, RunFn]:
    """The runners the product uses, by name (``zoo.backends``)."""
    import onnxruntime as ort

    paths: dict[str, RunFn] = {}
    if cuda:
        for precision in ("bf16", "fp16", "fp32"):
            runner = TorchRunner(copy.deepcopy(net), device="cuda", precision=precision)
            paths[f"torch {precision} channels-last"] = lambda b, r=runner: r.run(b)[0]
    onnx_path = export_onnx(net, work / "net.onnx")
    if not cuda or "CUDAExecutionProvider" in ort.get_available_providers():
        runner = OnnxRunner(onnx_path, device="cuda" if cuda else "cpu")
        paths[f"onnxruntime fp32 ({runner.device})"] = lambda b, r=runner: r.run(b)[0]
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", choices=sorted(WIDTHS), default="cellpose")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="batch sizes (default: 1 8 32 on CUDA, 1 4 on CPU)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per path and batch (default: 20 on CUDA, 2 on CPU)")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    batches = args.batches or ([1, 8, 32] if cuda else [1, 4])
    repeats = args.repeats or (20 if cuda else 2)
    run = Run("net_cuda" if cuda else "net", "Network forward pass: eager fp32 against the "
              "product's runners", {**vars(args), "batches": batches, "repeats": repeats})
    torch.manual_seed(0)
    net = CPNet(NetConfig(channels=WIDTHS[args.width])).eval()
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'} "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"{count_parameters(net) / 1e6:.2f}M parameters, {args.size}² inputs")

    table = Table([Column("batch", "batch", "d"), Column("path", "path"),
                   Column("ms_per_image", "ms/image", ".1f"),
                   Column("speedup", "vs eager fp32", ".2f", "×"),
                   Column("max_abs_diff", "max abs diff vs fp32", ".1e")],
                  title=f"{args.size}² inputs, {count_parameters(net) / 1e6:.2f}M parameters, "
                        f"{'CUDA' if cuda else 'CPU'}")
    with tempfile.TemporaryDirectory(prefix="bench-net-") as tmp:
        paths = {REFERENCE: reference(net, device), **product_paths(net, cuda, Path(tmp))}
        for batch in batches:
            x = torch.randn(batch, 2, args.size, args.size,
                            generator=torch.Generator().manual_seed(1)).numpy()
            expected = paths[REFERENCE](x)
            base = None
            for name, fn in paths.items():
                seconds = timed(fn, x, repeats) / batch
                base = base or seconds
                table.add(batch=batch, path=name, ms_per_image=seconds * 1e3,
                          speedup=base / seconds,
                          max_abs_diff=float(np.abs(fn(x) - expected).max()))
    print()
    print(table.markdown())
    fastest = {}
    for row in table.rows:
        if row["path"] != REFERENCE and row["speedup"] > fastest.get(row["batch"], (0, ""))[0]:
            fastest[row["batch"]] = (row["speedup"], row["path"])
    summary = {"parameters": count_parameters(net), "device": "cuda" if cuda else "cpu",
               "fastest": {str(b): {"path": p, "speedup": s} for b, (s, p) in fastest.items()}}
    run.write({"main": table}, summary)


if __name__ == "__main__":
    main()
