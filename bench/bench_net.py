"""Network forward benchmark: eager fp32 against our fast path, same network, one run.

Usage:
    .venv/bin/python bench/bench_net.py [--width cellpose|small] [--size 512] [--batches 1 8 32]

On CUDA the fast path is channels-last + bf16 autocast + torch.compile; the reference is
the same network run eagerly in fp32 (Cellpose's own CPnet measured 7.6 ms/image at batch 1
fp32 and 2.54 ms/image at batch 32 bf16 on the lent H100; target ≤ 1.0 ms/image at batch 32).
On CPU the fast path candidates are onnxruntime and channels-last torch; CPU figures are
reported for context. Outputs of each fast path are compared with eager fp32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zoo.nets.cpnet import CPNet, NetConfig, count_parameters  # noqa: E402

WIDTHS = {"cellpose": (2, 32, 64, 128, 256), "small": (2, 16, 32, 64, 128)}


def timed(fn, x, repeats: int, sync) -> float:
    """Median seconds per call after two warm-up calls."""
    for _ in range(2):
        fn(x)
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        sync()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def torch_variant(net: CPNet, device: torch.device, *, dtype, channels_last: bool, compile_: bool):
    model = net.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_:
        model = torch.compile(model, mode="max-autotune")
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    @torch.inference_mode()
    def run(x: torch.Tensor):
        x = x.to(device).contiguous(memory_format=fmt)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out, style = model(x)
        return out.float(), style.float()

    return run


def onnx_variant(net: CPNet):
    import onnxruntime as ort

    from zoo.backends import export_onnx

    path = export_onnx(net, Path(tempfile.mkdtemp()) / "net.onnx")
    session = ort.InferenceSession(str(path), providers=ort.get_available_providers())

    def run(x: torch.Tensor):
        out, style = session.run(["outputs", "style"], {"image": x.cpu().numpy()})
        return torch.from_numpy(out), torch.from_numpy(style)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", choices=sorted(WIDTHS), default="cellpose")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    batches = args.batches or ([1, 8, 32] if cuda else [1, 4])
    repeats = args.repeats or (20 if cuda else 2)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    net = CPNet(NetConfig(channels=WIDTHS[args.width])).eval()
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'} ({torch.get_num_threads()} threads), "
          f"torch {torch.__version__}, {count_parameters(net) / 1e6:.2f}M parameters, {args.size}² inputs")

    variants = {"eager fp32": dict(dtype=torch.float32, channels_last=False, compile_=False)}
    if cuda:
        variants["eager bf16 channels-last"] = dict(dtype=torch.bfloat16, channels_last=True, compile_=False)
        variants["compiled bf16 channels-last"] = dict(dtype=torch.bfloat16, channels_last=True, compile_=True)
    else:
        variants["eager fp32 channels-last"] = dict(dtype=torch.float32, channels_last=True, compile_=False)
    runs = {name: torch_variant(net, device, **spec) for name, spec in variants.items()}
    if not cuda:
        runs["onnxruntime fp32"] = onnx_variant(net)

    print("\n| batch | variant | ms/image | vs eager fp32 | max abs diff vs fp32 |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for batch in batches:
        x = torch.randn(batch, 2, args.size, args.size, generator=torch.Generator().manual_seed(1))
        reference = runs["eager fp32"](x)[0].cpu()
        base = None
        for name, run in runs.items():
            seconds = timed(run, x, repeats, sync) / batch
            base = base or seconds
            diff = (run(x)[0].cpu() - reference).abs().max().item()
            print(f"| {batch} | {name} | {seconds * 1e3:.2f} | {base / seconds:.2f}× | {diff:.2e} |")
    if cuda:
        print("\ntarget: ≤ 1.0 ms/image at batch 32 (Cellpose 3 CPnet eager: 7.6 ms at batch 1 fp32, "
              "2.54 ms at batch 32 bf16 on the lent H100)")


if __name__ == "__main__":
    main()
