"""cellpose 3.1.1.2's side of the import checks; run INSIDE bench/.venv-cellpose, never imports zoo.

Used by tests/fixtures/make_cellpose_fixtures.py (small reference fixtures) and by
bench/bench_cellpose_import.py (the side-by-side benchmark). Three subcommands:

    train   DATA.npz --out CKPT --nbase 2 32 64 128 256 --epochs N [--init INIT] [--size]
            cellpose's own trainer (``train.train_seg``) on the images and labels of DATA.npz
            (keys ``image_<i>``, ``labels_<i>``; grayscale, channels [0, 0]) writes CKPT, a
            ``torch.save``'d CPnet state dict, starting from the CPnet state dict INIT (loaded
            by cellpose's ``CPnet.load_model``) when given. ``--size`` then fits cellpose's
            size model (``train.train_size``), written by cellpose as ``CKPT_size.npy``.
    forward CKPT INPUT.npy --out OUT.npz
            cellpose's ``CPnet`` (loaded with its own ``load_model``) on an already normalised
            ``(B, 2, H, W)`` float32 input: OUT.npz holds ``outputs`` and ``style``.
    eval    CKPT IMAGES.npz --diameter D [D ...] --out OUT.npz [--repeats R]
            ``CellposeModel.eval(image, diameter=D, channels=[0, 0])`` on every ``image_<i>``
            (its own defaults otherwise: normalize, bsize 224, tile_overlap 0.1, resample,
            niter from the diameter); OUT.npz holds ``masks_<i>``, ``style_<i>`` and
            ``seconds_<i>`` (every repeat) after one warm-up call; with ``--size-model SIZE``
            also ``diam_style_<i>``, cellpose's ``SizeModel._size_estimation`` of that style.

cellpose 3.1.1.2 hard-codes 256-wide style buffers in ``core.run_net`` and
``train.train_size``, so a CPnet narrower than Cellpose's own (whose deepest level, and style,
has fewer than 256 channels) cannot run through ``CellposeModel.eval``. For such a network this
script uses ``PaddedStyleCPnet``: cellpose's ``CPnet`` with its style zero-padded to 256 at the
output. The forward pass itself is cellpose's; zero padding changes neither the tile average
nor the L2 normalisation that ``run_net`` applies to styles, so ``style[:S]`` is the network's
style. Cellpose-width networks run without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Nothing may be downloaded or written under ~/.cellpose: point the model dir at a throwaway.
os.environ.setdefault("CELLPOSE_LOCAL_MODELS_PATH", tempfile.mkdtemp(prefix="cellpose-models-"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from cellpose import models, resnet_torch, train  # noqa: E402
from cellpose.version import version as cellpose_version  # noqa: E402

STYLE_BUFFER = 256  # the style width cellpose's run_net and train_size allocate


class PaddedStyleCPnet(resnet_torch.CPnet):
    """cellpose's CPnet with its style zero-padded to 256 channels (see the module doc)."""

    def forward(self, data):
        outputs, style, features = super().forward(data)
        if style.shape[1] < STYLE_BUFFER:
            style = F.pad(style, (0, STYLE_BUFFER - style.shape[1]))
        return outputs, style, features


def _network(nbase: list[int], *, mkldnn: bool, diam_mean: float = 30.0) -> resnet_torch.CPnet:
    cls = PaddedStyleCPnet if nbase[-1] < STYLE_BUFFER else resnet_torch.CPnet
    return cls(list(nbase), 3, 3, mkldnn=mkldnn, max_pool=True, diam_mean=diam_mean)


def _nbase_of(checkpoint: Path) -> list[int]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    nbase = [int(state["downsample.down.res_down_0.proj.1.weight"].shape[1])]
    level = 0
    while f"downsample.down.res_down_{level}.proj.1.weight" in state:
        nbase.append(int(state[f"downsample.down.res_down_{level}.proj.1.weight"].shape[0]))
        level += 1
    return nbase


def _images(path: Path, key: str) -> list[np.ndarray]:
    with np.load(path) as data:
        count = len([k for k in data.files if k.startswith(f"{key}_")])
        return [data[f"{key}_{i}"] for i in range(count)]


def cmd_train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    images, labels = _images(args.data, "image"), _images(args.data, "labels")
    net = _network(args.nbase, mkldnn=False, diam_mean=args.diam_mean)
    if args.init is not None:
        net.load_model(str(args.init), device=torch.device("cpu"))
    start = time.perf_counter()
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="cellpose-train-") as save_path:
        path, losses, _ = train.train_seg(
            net, train_data=images, train_labels=labels, channels=[0, 0], normalize=True,
            n_epochs=args.epochs, batch_size=args.batch_size, nimg_per_epoch=args.batch_size,
            learning_rate=args.learning_rate, save_path=save_path, model_name=out.name,
            min_train_masks=1)
        seconds = time.perf_counter() - start
        shutil.move(path, out)
    record = {"checkpoint": str(out), "nbase": args.nbase, "epochs": args.epochs,
              "train_seconds": seconds, "first_loss": float(losses[0]),
              "final_loss": float(np.mean(losses[-10:]))}
    if args.size:
        net.eval()
        params = train.train_size(net, str(out), train_data=images, train_labels=labels,
                                  channels=[0, 0], normalize=True, min_train_masks=1,
                                  n_epochs=args.size_epochs, batch_size=8)
        record["size_model"] = str(out) + "_size.npy"
        record["size_style_dims"] = int(np.asarray(params["A"]).shape[0])
    return record


def cmd_forward(args: argparse.Namespace) -> dict:
    nbase = _nbase_of(args.checkpoint)
    net = resnet_torch.CPnet(nbase, 3, 3, mkldnn=False, max_pool=True)
    net.load_model(str(args.checkpoint), device=torch.device("cpu"))
    net.eval()
    batch = torch.from_numpy(np.load(args.input).astype(np.float32))
    with torch.no_grad():
        outputs, style = net(batch)[:2]
    np.savez(args.out, outputs=outputs.numpy(), style=style.numpy())
    return {"nbase": nbase, "input_shape": list(batch.shape)}


def _cellpose_model(checkpoint: Path) -> models.CellposeModel:
    nbase = _nbase_of(checkpoint)
    if nbase[1:] == [32, 64, 128, 256]:
        return models.CellposeModel(gpu=False, pretrained_model=str(checkpoint))
    model = models.CellposeModel(gpu=False, pretrained_model=False, nchan=nbase[0])
    model.net = _network(nbase, mkldnn=bool(model.mkldnn))
    model.net.load_model(str(checkpoint), device=torch.device("cpu"))
    model.pretrained_model = str(checkpoint)
    model.diam_mean = float(model.net.diam_mean.item())
    model.diam_labels = float(model.net.diam_labels.item())
    return model


def cmd_eval(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    model = _cellpose_model(args.checkpoint)
    images = _images(args.images, "image")
    diameters = args.diameter * len(images) if len(args.diameter) == 1 else args.diameter
    if len(diameters) != len(images):
        raise SystemExit(f"{len(images)} images but {len(diameters)} diameters")
    model.eval(images[0], diameter=diameters[0], channels=[0, 0])  # warm-up (numba, mkldnn)
    size = (models.SizeModel(model, pretrained_size=str(args.size_model))
            if args.size_model is not None else None)
    arrays = {}
    for i, (image, diameter) in enumerate(zip(images, diameters)):
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            masks, _, style = model.eval(image, diameter=diameter, channels=[0, 0])
            seconds.append(time.perf_counter() - start)
        arrays[f"masks_{i}"] = masks.astype(np.uint32)
        arrays[f"style_{i}"] = np.asarray(style, np.float32)[: model.net.nbase[-1]]
        arrays[f"seconds_{i}"] = np.asarray(seconds)
        if size is not None:  # cellpose's regression on this style (step 1 of SizeModel.eval)
            arrays[f"diam_style_{i}"] = np.asarray(size._size_estimation(arrays[f"style_{i}"]))
    np.savez_compressed(args.out, **arrays)
    return {"nbase": list(model.net.nbase), "mkldnn": bool(model.mkldnn),
            "threads": torch.get_num_threads(), "diam_mean": float(model.diam_mean),
            "diam_labels": float(model.diam_labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--nbase", type=int, nargs="+", default=[2, 32, 64, 128, 256])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=0.005)
    p.add_argument("--diam-mean", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, help="start from this CPnet state dict")
    p.add_argument("--size", action="store_true", help="also fit cellpose's size model")
    p.add_argument("--size-epochs", type=int, default=4)
    p = sub.add_parser("forward")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("input", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("eval")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("images", type=Path)
    p.add_argument("--diameter", type=float, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size-model", type=Path, help="also report SizeModel._size_estimation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="cellpose-side %(levelname)s %(name)s: %(message)s")
    record = {"train": cmd_train, "forward": cmd_forward, "eval": cmd_eval}[args.command](args)
    record["versions"] = {"cellpose": cellpose_version, "torch": torch.__version__,
                          "numpy": np.__version__}
    print(json.dumps(record))


if __name__ == "__main__":
    main()
