"""A small Hugging Face Hub-compatible HTTP server for tests and benchmarks (127.0.0.1 only).

It implements only what the real ``huggingface_hub`` client calls on cellzoo's pull and push
paths, and stores repositories as content-addressed commits in a directory, so revisions are
real 40-hex commit ids and old commits stay reachable:

=======  ===============================================  =======================================
method   path                                             used by
=======  ===============================================  =======================================
GET      /api/models/{org}/{name}[/revision/{rev}]        ``HfApi.repo_info`` / ``model_info``
GET      /api/models/{org}/{name}/tree/{rev}[/{path}]     ``list_repo_tree`` (``snapshot_download``)
HEAD     /{org}/{name}/resolve/{rev}/{path}               file metadata: ETag, X-Repo-Commit, size
GET      /{org}/{name}/resolve/{rev}/{path}               file bytes, with ``Range: bytes=N-``
POST     /api/repos/create                                ``create_repo`` (409 when it exists)
POST     /api/validate-yaml                               README.md metadata check on commit
POST     /api/models/{org}/{name}/preupload/{rev}         upload modes: always ``regular``
POST     /api/models/{org}/{name}/commit/{rev}            NDJSON commit: base64 ``file`` entries,
                                                          ``deletedFile``, ``parentCommit`` check
=======  ===============================================  =======================================

On disk: ``blobs/<sha256>`` (file contents), ``repos/<org>/<name>/commits/<sha1>.json``
(``{"parent", "summary", "files": {path: {"sha256", "size", "oid"}}}``) and
``repos/<org>/<name>/refs/<branch>``. The commit id is the sha1 of its JSON record.

Test hooks: ``stats`` counts requests and body bytes sent; ``drop_once(path, after=N)`` makes
the next full GET of ``path`` send N bytes and then close the connection; ``token`` makes write
endpoints require ``Authorization: Bearer <token>``.

Run standalone: ``python tests/hubserver.py DIR [PORT]``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_ROUTES = [
    ("GET", re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "repo_info"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$"), "tree"),
    ("HEAD", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("GET", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
]
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def git_oid(data: bytes) -> str:
    """The git blob sha1 of ``data`` (what the Hub reports as a regular file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An HTTP error answer: status, Hub error code (``X-Error-Code``) and message."""

    def __init__(self, status: int, code: str, message: str, commit: str | None = None):
        super().__init__(message)
        self.status, self.code, self.commit = status, code, commit


class HubStore:
    """Repositories as content-addressed commits under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _repo_dir(self, repo_id: str) -> Path:
        return self.root / "repos" / repo_id

    def exists(self, repo_id: str) -> bool:
        return self._repo_dir(repo_id).is_dir()

    def create_repo(self, repo_id: str) -> bool:
        """Create an empty repo with one initial commit; False when it already exists."""
        with self._lock:
            if self.exists(repo_id):
                return False
            (self._repo_dir(repo_id) / "commits").mkdir(parents=True)
            (self._repo_dir(repo_id) / "refs").mkdir()
            sha = self._write_commit(
                repo_id, {"parent": None, "summary": "initial commit", "files": {}}
            )
            (self._repo_dir(repo_id) / "refs" / "main").write_text(sha)
            return True

    def resolve(self, repo_id: str, revision: str) -> str:
        """The commit id a branch name or commit id points to."""
        if not self.exists(repo_id):
            raise HubError(404, "RepoNotFound", f"repository {repo_id} not found")
        if (
            _COMMIT.match(revision)
            and (self._repo_dir(repo_id) / "commits" / f"{revision}.json").is_file()
        ):
            return revision
        ref = self._repo_dir(repo_id) / "refs" / revision
        if "/" not in revision and ref.is_file():
            return ref.read_text().strip()
        raise HubError(404, "RevisionNotFound", f"revision {revision} not found in {repo_id}")

    def files(self, repo_id: str, commit: str) -> dict[str, dict]:
        """``{path: {"sha256", "size", "oid"}}`` at ``commit``."""
        record = json.loads((self._repo_dir(repo_id) / "commits" / f"{commit}.json").read_text())
        return record["files"]

    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def commit(
        self,
        repo_id: str,
        branch: str,
        *,
        put: dict[str, bytes],
        delete: list[str],
        summary: str,
        parent: str | None = None,
    ) -> str:
        """Apply ``put``/``delete`` on top of ``branch`` and advance it; returns the commit id."""
        with self._lock:
            head = self.resolve(repo_id, branch)
            if parent is not None and parent != head:
                raise HubError(
                    412, "PreconditionFailed", f"parent commit {parent} is not the head {head}"
                )
            files = dict(self.files(repo_id, head))
            for path in delete:
                files.pop(path, None)
            for path, data in put.items():
                sha256 = hashlib.sha256(data).hexdigest()
                if not self.blob(sha256).exists():
                    self.blob(sha256).write_bytes(data)
                files[path] = {"sha256": sha256, "size": len(data), "oid": git_oid(data)}
            sha = self._write_commit(repo_id, {"parent": head, "summary": summary, "files": files})
            (self._repo_dir(repo_id) / "refs" / branch).write_text(sha)
            return sha

    def _write_commit(self, repo_id: str, record: dict) -> str:
        text = json.dumps(record, sort_keys=True)
        sha = hashlib.sha1(text.encode()).hexdigest()
        (self._repo_dir(repo_id) / "commits" / f"{sha}.json").write_text(text)
        return sha


@dataclass
class Stats:
    """What the server answered: one ``(method, path, status, range, body bytes)`` per request."""

    requests: list[tuple[str, str, int, str | None, int]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def bytes_sent(self) -> int:
        return sum(r[4] for r in self.requests)

    def reset(self) -> None:
        self.requests.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args) -> None:
        """Stay quiet: tests read ``stats`` instead."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        body = (
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if method == "POST"
            else b""
        )
        for route_method, pattern, name in _ROUTES:
            match = pattern.match(url.path)
            if route_method == method and match:
                args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                try:
                    if method == "POST":
                        self._check_token()
                    getattr(self, f"_{name}")(body=body, **args)
                except HubError as error:
                    self._json(error.status, {"error": str(error)}, error=error)
                return
        self._json(404, {"error": f"no route for {method} {url.path}"})

    def _check_token(self) -> None:
        token = self.server.hub.token
        if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
            raise HubError(401, "Unauthorized", "Invalid credentials in Authorization header")

    def _send(
        self, status: int, body: bytes, headers: dict[str, str], *, length: int | None = None
    ):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        sent = 0
        if self.command != "HEAD":
            self.wfile.write(body)
            sent = len(body)
        self.server.hub.stats.requests.append(
            (self.command, urlsplit(self.path).path, status, self.headers.get("Range"), sent)
        )

    def _json(self, status: int, payload, *, error: HubError | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if error is not None:
            headers["X-Error-Code"] = error.code
            headers["X-Error-Message"] = str(error)
            if error.commit:
                headers["X-Repo-Commit"] = error.commit
        self._send(status, json.dumps(payload).encode(), headers)

    # ---- read endpoints ---------------------------------------------------------------------

    def _repo_info(self, *, repo: str, rev: str = "main", body: bytes) -> None:
        store = self.server.hub.store
        commit = store.resolve(repo, rev)
        siblings = [{"rfilename": path} for path in sorted(store.files(repo, commit))]
        self._json(
            200,
            {
                "id": repo,
                "modelId": repo,
                "sha": commit,
                "private": False,
                "siblings": siblings,
                "tags": [],
            },
        )

    def _tree(self, *, repo: str, rev: str, path: str = "", body: bytes) -> None:
        store = self.server.hub.store
        commit = store.resolve(repo, rev)
        recursive = self.query.get("recursive", ["False"])[0].lower() == "true"
        prefix = f"{path.strip('/')}/" if path else ""
        entries, folders = [], set()
        for name, info in sorted(store.files(repo, commit).items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            parts = rest.split("/")[:-1]
            folders.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
            entries.append({"type": "file", "path": name, "size": info["size"], "oid": info["oid"]})
        entries += [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders)]
        self._json(200, entries)

    def _resolve(self, *, repo: str, rev: str, path: str, body: bytes) -> None:
        store = self.server.hub.store
        commit = store.resolve(repo, rev)
        info = store.files(repo, commit).get(path)
        if info is None:
            raise HubError(404, "EntryNotFound", f"{path} not found in {repo}@{commit}", commit)
        headers = {
            "ETag": f'"{info["sha256"]}"',
            "X-Repo-Commit": commit,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if self.command == "HEAD":
            self._send(200, b"", headers, length=info["size"])
            return
        data = store.blob(info["sha256"]).read_bytes()
        start = _range_start(self.headers.get("Range"))
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._send(206, data[start:], headers)
        elif self.server.hub.take_drop(path) is not None:
            self._send_truncated(data, headers, self.server.hub.take_drop(path, pop=True))
        else:
            self._send(200, data, headers)

    def _send_truncated(self, data: bytes, headers: dict[str, str], after: int) -> None:
        """Promise the whole file, send ``after`` bytes, then drop the connection."""
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:after])
        self.wfile.flush()
        self.close_connection = True
        self.server.hub.stats.requests.append(("GET", urlsplit(self.path).path, 200, None, after))

    # ---- write endpoints --------------------------------------------------------------------

    def _create_repo(self, *, body: bytes) -> None:
        payload = json.loads(body)
        repo = f"{payload.get('organization')}/{payload['name']}"
        answer = {"url": f"{self.server.hub.url}/{repo}", "name": repo}
        if not self.server.hub.store.create_repo(repo):
            error = HubError(409, "Conflict", f"You already created this model repo: {repo}")
            self._json(409, {"error": str(error), **answer}, error=error)
            return
        self._json(200, answer)

    def _validate_yaml(self, *, body: bytes) -> None:
        self._json(200, {"errors": [], "warnings": []})

    def _preupload(self, *, repo: str, rev: str, body: bytes) -> None:
        store = self.server.hub.store
        existing = store.files(repo, store.resolve(repo, rev))
        files = [
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": existing.get(f["path"], {}).get("oid"),
            }
            for f in json.loads(body)["files"]
        ]
        self._json(200, {"files": files})

    def _commit(self, *, repo: str, rev: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        put, delete = {}, []
        for item in lines:
            value = item["value"]
            if item["key"] == "file":
                put[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                delete.append(value["path"])
            elif item["key"] != "header":
                raise HubError(400, "BadRequest", f"unsupported commit operation {item['key']!r}")
        sha = self.server.hub.store.commit(
            repo,
            rev,
            put=put,
            delete=delete,
            summary=header.get("summary", ""),
            parent=header.get("parentCommit"),
        )
        url = f"{self.server.hub.url}/{repo}/commit/{sha}"
        self._json(200, {"success": True, "commitOid": sha, "commitUrl": url})


def _range_start(header: str | None) -> int:
    if not header:
        return 0
    match = re.fullmatch(r"bytes=(\d+)-", header.strip())
    if match is None:
        raise HubError(416, "RangeNotSatisfiable", f"unsupported range {header!r}")
    return int(match.group(1))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer


class HubServer:
    """A threaded Hub-compatible server on 127.0.0.1; use as a context manager or start/stop."""

    def __init__(self, root: str | Path, *, port: int = 0, token: str | None = None) -> None:
        self.store = HubStore(root)
        self.stats = Stats()
        self.token = token
        self._drops: dict[str, int] = {}
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.hub = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def drop_once(self, path: str, *, after: int) -> None:
        """Make the next full GET of file ``path`` (any repo) stop after ``after`` bytes."""
        self._drops[path] = after

    def take_drop(self, path: str, *, pop: bool = False) -> int | None:
        return self._drops.pop(path, None) if pop else self._drops.get(path)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- synthetic zoos for tests and benchmarks ---------------------------------------------------


def make_entry(root: str | Path, name: str, files: dict[str, bytes], **fields):
    """Write ``files`` under ``root`` and return a ``ModelEntry`` pinning them (sha256, size)."""
    from zoo.manifest import ModelEntry

    specs = []
    for path, data in files.items():
        (Path(root) / path).parent.mkdir(parents=True, exist_ok=True)
        (Path(root) / path).write_bytes(data)
        specs.append({"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    defaults = {"version": "1.0.0", "kind": "generalist", "diameter": 30.0}
    return ModelEntry.model_validate({"name": name, **defaults, **fields, "files": specs})


def write_zoo(root: str | Path, entries: list) -> Path:
    """Write ``root/models.yaml`` listing ``entries``; returns its path."""
    from zoo.manifest import Manifest, dump_manifest

    return dump_manifest(Manifest(version=1, models=entries), Path(root) / "models.yaml")


if __name__ == "__main__":  # pragma: no cover
    server = HubServer(sys.argv[1], port=int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    print(server.url, flush=True)
    server._httpd.serve_forever()
