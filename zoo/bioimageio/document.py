"""The human side of a package: the cover picture and the README (its documentation)."""

from __future__ import annotations

import numpy as np

from zoo.bioimageio import rdf as spec
from zoo.manifest import ModelEntry
from zoo.model import NET_FLOW_SCALE, SegmentationModel

COVER_ZOOM = 2


def cover(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The test image beside its masks' outlines: ``(COVER_ZOOM*Y, 2*COVER_ZOOM*X, 3)`` uint8,
    a 2:1 picture as bioimage.io asks.

    Args:
        image: ``(C, Y, X)`` raw test input.
        labels: ``(Y, X)`` masks computed from the test output.
    """
    from zoo.viz import composite, overlay

    channels_last = np.moveaxis(image, 0, -1)
    if channels_last.shape[-1] > 1 and not np.any(channels_last[..., 1]):
        channels_last = channels_last[..., :1]  # no nuclear stain: show grey, not green
    left = np.round(composite(channels_last) * 255).astype(np.uint8)
    panel = np.concatenate([left, overlay(channels_last, labels)], axis=1)
    return np.repeat(np.repeat(panel, COVER_ZOOM, axis=0), COVER_ZOOM, axis=1)


def readme(entry: ModelEntry, model: SegmentationModel) -> str:
    """The package documentation (Markdown), with the Validation section bioimage.io asks."""
    config = model.config
    fp = model.flow_params
    lines = [
        f"# {entry.name} {entry.version} (cellzoo)", "",
        entry.description or f"A cellzoo {entry.kind} model.", "",
        "A Cellpose-style residual U-Net exported from cellzoo "
        "(`zoo export bioimageio`). It predicts, for every "
        "pixel, the flow towards its cell's centre and a cell probability, plus one style "
        "vector per image.", "",
        "## Inputs", "",
        f"`image`: `(batch, channel, y, x)` float32 raw intensities, channels "
        f"{', '.join(f'`{c}`' for c in spec.channel_names(config.in_channels))} (a channel of "
        f"zeros when there is no nuclear stain). y and x: any multiple of {config.divisor} "
        f"from {2 * config.divisor}. Each channel is scaled so its 1st and 99th percentile "
        "become 0 and 1 (the declared `scale_range` preprocessing).", "",
        f"Cells should be about **{model.diam_mean:g} pixels** across: resize images by "
        f"`{model.diam_mean:g} / diameter` first (cellzoo does this itself).", "",
        "## Outputs", "",
        f"- `flows`: `(batch, 3, y, x)` float32: flow Y and flow X times {NET_FLOW_SCALE:g} "
        "(Cellpose's convention) and the cell-probability logit.",
        f"- `style`: `(batch, {config.style_dim})` float32, the L2-normalised style vector "
        "cellzoo routes images with.", "",
        "## From outputs to masks", "",
        f"Divide the flows by {NET_FLOW_SCALE:g} and run Cellpose's flow dynamics: pixels "
        f"with cellprob above {fp.cellprob_threshold:g} follow the flows for {fp.niter} "
        f"steps; masks with a flow error above {fp.flow_threshold:g} or fewer than "
        f"{fp.min_size} pixels are dropped. With cellzoo: "
        f"`zoo import bioimageio THIS.zip --name {entry.name}` then "
        f"`zoo segment IMAGE --model {entry.name}`.", "",
        "## Validation", "",
        "The package's test tensors (`test_input.npy`, `test_output_flows.npy`, "
        "`test_output_style.npy`) are a synthetic image from cellzoo's generator, resized "
        "to the model's diameter, and the network's outputs on it; the cover shows the "
        "masks computed from them. To validate on your own data, segment annotated images "
        "and compare masks by average precision at IoU 0.5-0.9 (`zoo eval`).",
    ]
    if entry.metrics:
        lines += ["", "| metric | value |", "| --- | ---: |"]
        lines += [f"| {key} | {value:.4g} |" for key, value in entry.metrics.items()]
        if entry.training_data and entry.training_data.summary:
            lines += ["", f"Measured on held-out images like its training data: "
                          f"{entry.training_data.summary}."]
    lines += ["", "## Citation", ""]
    lines += [f"- {text} doi:{doi}" for text, doi in spec.CITATIONS]
    return "\n".join(lines) + "\n"
