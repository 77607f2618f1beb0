"""One validation layer for every request parameter of the HTTP API.

Each form field of ``/segment`` and ``/route`` has one ``FieldSpec``: the text a client sends
is checked here (length, ASCII number syntax, finite value, range) and turned into its
value, or refused with an ``ApiError`` (400) that names the field. The ASGI guard
(``zoo.service.guard``) applies it to the raw multipart form before BentoML reads it, and
``zoo.service.core.parse_request`` applies the same checks to the values the endpoints get,
so the two can never disagree.

Bounds that follow from the image (the diameter's rescale and the network's pixel budget,
the channel indices) are checked once the image's shape is known (``ApiCore``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zoo.io.outputs import OUTPUT_FORMATS
from zoo.service.errors import ApiError

#: Longest text value of a form field, in bytes (a number, a name, a channel list).
MAX_TEXT_BYTES = 256
#: Longest number, in characters: enough for any float's repr.
MAX_NUMBER_CHARS = 32
#: Largest channel index accepted (images have far fewer channels; checked again later).
MAX_CHANNEL = 63
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,4})?", re.ASCII)
_INT = re.compile(r"[+-]?\d{1,10}", re.ASCII)
_CHANNELS = re.compile(r"\s*(\d{1,2})\s*(?:,\s*(\d{1,2})\s*)?", re.ASCII)
OUTPUTS = ("json", *OUTPUT_FORMATS)
AUTO = "auto"


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", message, field)


def _shown(text: str) -> str:
    """``text`` for an error message: quoted, at most 40 characters."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def number(field: str, value: Any, *, integer: bool = False, minimum: float | None = None,
           exclusive: bool = False, maximum: float | None = None) -> float | int:
    """A finite number from ``value`` (text as sent, or a number BentoML already parsed).

    Text must be a plain ASCII decimal (``12``, ``-0.5``, ``1e-3``) of at most
    ``MAX_NUMBER_CHARS`` characters: no ``nan``, ``inf``, hex or non-ASCII digits.
    """
    if isinstance(value, bool):
        raise _invalid(field, f"{field} must be a number, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        pattern = _INT if integer else _FLOAT
        if len(text) > MAX_NUMBER_CHARS or not pattern.fullmatch(text):
            kind = "an integer" if integer else "a number"
            raise _invalid(field, f"{field} must be {kind} (plain decimal, at most "
                                  f"{MAX_NUMBER_CHARS} characters), got {_shown(value)}")
        value = int(text) if integer else float(text)
    elif integer and isinstance(value, float) and value.is_integer():
        value = int(value)
    if integer and not isinstance(value, int):
        raise _invalid(field, f"{field} must be an integer, got {value!r}")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _invalid(field, f"{field} must be a finite number, got {value!r}")
    low_ok = minimum is None or (value > minimum if exclusive else value >= minimum)
    if not low_ok or (maximum is not None and value > maximum):
        low = "" if minimum is None else f"{'>' if exclusive else '>='} {minimum:g}"
        high = "" if maximum is None else f"<= {maximum:g}"
        raise _invalid(field, f"{field} must be {' and '.join(filter(None, [low, high]))}, "
                              f"got {value:g}")
    return value


def text(field: str, value: Any) -> str:
    """A short text value (numbers BentoML parsed from text become text again)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _invalid(field, f"{field} must be text, got {type(value).__name__}")
    value = value if isinstance(value, str) else format(value)
    if len(value.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise _invalid(field, f"{field} is longer than {MAX_TEXT_BYTES} bytes")
    return value


def channels(field: str, value: Any) -> tuple[int, int | None]:
    """``"0"`` → ``(0, None)``, ``"0,1"`` → ``(0, 1)``: ASCII digits only, at most
    ``MAX_CHANNEL``."""
    raw = text(field, value)
    match = _CHANNELS.fullmatch(raw)
    if match is None:
        raise _invalid(field, f"channels must be 'CYTO' or 'CYTO,NUCLEUS' (channel indices "
                              f"0..{MAX_CHANNEL}), got {_shown(raw)}")
    cyto, nucleus = int(match.group(1)), match.group(2)
    indices = (cyto, None if nucleus is None else int(nucleus))
    if max(i for i in indices if i is not None) > MAX_CHANNEL:
        raise _invalid(field, f"channel indices go up to {MAX_CHANNEL}, got {_shown(raw)}")
    return indices


def model(field: str, value: Any) -> str:
    name = text(field, value).strip()
    if not name:
        raise _invalid(field, "model must be 'auto' or a registry name")
    return name


def output(field: str, value: Any) -> str:
    name = text(field, value).strip()
    if name not in OUTPUTS:
        raise _invalid(field, f"output must be one of {', '.join(OUTPUTS)}, got {_shown(name)}")
    return name


@dataclass(frozen=True)
class FieldSpec:
    """One form field: its kind and how its value is checked (``None`` for the file)."""

    name: str
    check: Callable[[str, Any], Any] | None = None

    @property
    def is_file(self) -> bool:
        return self.check is None


def _diameter(field: str, value: Any) -> float:
    return float(number(field, value, minimum=0, exclusive=True, maximum=1e6))


def _flow_threshold(field: str, value: Any) -> float:
    return float(number(field, value, minimum=0, maximum=1e6))


def _cellprob_threshold(field: str, value: Any) -> float:
    return float(number(field, value, minimum=-1e6, maximum=1e6))


def _min_size(field: str, value: Any) -> int:
    return int(number(field, value, integer=True, minimum=0, maximum=2**31 - 1))


IMAGE = FieldSpec("image")
SEGMENT_FIELDS: dict[str, FieldSpec] = {spec.name: spec for spec in (
    IMAGE,
    FieldSpec("model", model),
    FieldSpec("diameter", _diameter),
    FieldSpec("channels", channels),
    FieldSpec("flow_threshold", _flow_threshold),
    FieldSpec("cellprob_threshold", _cellprob_threshold),
    FieldSpec("min_size", _min_size),
    FieldSpec("output", output),
)}
ROUTE_FIELDS: dict[str, FieldSpec] = {"image": IMAGE, "channels": SEGMENT_FIELDS["channels"]}
#: The multipart forms the guard checks, by path.
FORMS: dict[str, Mapping[str, FieldSpec]] = {"/segment": SEGMENT_FIELDS,
                                             "/route": ROUTE_FIELDS,
                                             "/preview": {"image": IMAGE}}


def check_fields(form: Mapping[str, FieldSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """Every text field of ``values`` checked by its spec; the checked values by name."""
    return {name: form[name].check(name, value)  # type: ignore[misc]
            for name, value in values.items() if value is not None and not form[name].is_file}
