"""Validate and test a bioimage.io package with bioimage.io's own tools, offline.

Run as ``python tests/bioimageio_check.py PACKAGE.zip`` with ``BIOIMAGEIO_CACHE_PATH`` set (the
tests point it into ``tmp_path``). Any network connection other than loopback is refused
and recorded. Prints one JSON object: the ``load_description`` status and the
``test_model`` summary (status and every detail's name and status, errors included), plus
the refused connections.
"""

from __future__ import annotations

import json
import socket
import sys

refused: list[str] = []
_connect = socket.socket.connect


def _guarded_connect(self, address):  # the test runs offline: record and refuse
    host = address[0] if isinstance(address, tuple) else str(address)
    if host not in ("127.0.0.1", "::1", "localhost") and self.family != socket.AF_UNIX:
        refused.append(f"{host}:{address[1] if isinstance(address, tuple) else ''}")
        raise OSError(f"network access refused in the bioimage.io check: {host}")
    return _connect(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]


def _details(summary) -> list[dict]:
    return [
        {"name": d.name, "status": d.status,
         "errors": [f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in d.errors],
         "warnings": [f"{'.'.join(map(str, w.loc))}: {w.msg}" for w in d.warnings]}
        for d in summary.details
    ]


def main(path: str) -> None:
    from bioimageio.core import test_model
    from bioimageio.spec import load_description, load_description_and_validate_format_only

    description = load_description(path, perform_io_checks=True)
    fmt = load_description_and_validate_format_only(path)
    tested = test_model(path, devices=["cpu"])
    report = {
        "load_description": description.validation_summary.status,
        "type": getattr(description, "type", None),
        "format_version": getattr(description, "format_version", None),
        "validate_format": fmt.status,
        "format_details": _details(fmt),
        "test_model": tested.status,
        "details": _details(tested),
        "refused_connections": refused,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
