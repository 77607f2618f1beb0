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
POST     /api/models/{org}/{name}/preupload/{rev}         upload modes: ``lfs`` or ``regular``
POST     /{org}/{name}.git/info/lfs/objects/batch         LFS batch API (basic transfer): upload
                                                          and verify actions per object
PUT      /lfs/upload/{org}/{name}/{oid}?size=&sig=        the upload action's href (a signed URL)
POST     /{org}/{name}.git/info/lfs/objects/verify        the verify action: object stored whole?
POST     /api/models/{org}/{name}/commit/{rev}            NDJSON commit: base64 ``file`` entries,
                                                          ``lfsFile`` (oid sha256 + size),
                                                          ``deletedFile``, ``parentCommit`` check
GET      /lfs/objects/{oid}                               LFS object bytes (the "CDN"), ranges
=======  ===============================================  =======================================

Large files take the Hub's LFS path. The pre-upload check answers ``lfs`` for a file larger
than ``lfs_threshold`` bytes (the Hub's rule: files over 10 MB go through LFS; tests pass a
small threshold) or matched by a ``filter=lfs`` pattern of the repo's ``.gitattributes``.
The client then asks the batch endpoint for upload actions, PUTs the bytes to the signed
href (checked against the oid and size), calls verify, and commits an ``lfsFile`` entry
that references the stored object. Reads of an LFS file answer like the Hub: HEAD and GET on
``resolve`` redirect (302) to the object on another host (``localhost`` instead of
``127.0.0.1``, so the client treats it as a CDN), with ``X-Linked-Etag`` (the sha256) and
``X-Linked-Size``; the tree lists the file with its ``lfs`` pointer info.

The client speaks this LFS protocol when Xet is off (``HF_HUB_DISABLE_XET=1``, or
``hf_xet`` not installed); with ``hf_xet`` it uploads LFS files through Xet storage, which
this server does not implement.

On disk: ``blobs/<sha256>`` (file contents), ``repos/<org>/<name>/commits/<sha1>.json``
(``{"parent", "summary", "files": {path: {"sha256", "size", "oid"[, "lfs": true]}}}``) and
``repos/<org>/<name>/refs/<branch>``. The commit id is the sha1 of its JSON record.

Test hooks: ``stats`` counts requests and body bytes sent; ``drop_once(path, after=N)`` makes
the next full GET of ``path`` send N bytes and then close the connection; ``token`` makes write
endpoints require ``Authorization: Bearer <token>``.

Run standalone: ``python tests/hubserver.py DIR [PORT]``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import os
import re
import sys
import tempfile
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
    ("POST", re.compile(r"^/(?P<repo>[\w.-]+/[\w.-]+?)\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("POST", re.compile(r"^/(?P<repo>[\w.-]+/[\w.-]+?)\.git/info/lfs/objects/verify$"),
     "lfs_verify"),
    ("PUT", re.compile(rf"^/lfs/upload/{_REPO}/(?P<oid>[0-9a-f]{{64}})$"), "lfs_put"),
    ("GET", re.compile(r"^/lfs/objects/(?P<oid>[0-9a-f]{64})$"), "lfs_object"),
    ("HEAD", re.compile(r"^/lfs/objects/(?P<oid>[0-9a-f]{64})$"), "lfs_object"),
]
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_OID = re.compile(r"^[0-9a-f]{64}$")
LFS_THRESHOLD = 10 * 1024 * 1024
"""Files larger than this take the LFS path (the Hub: "files larger than 10MB")."""
LFS_CONTENT_TYPE = "application/vnd.git-lfs+json"


def git_oid(data: bytes) -> str:
    """The git blob sha1 of ``data`` (what the Hub reports as a regular file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def lfs_patterns(gitattributes: bytes) -> list[str]:
    """The path patterns a ``.gitattributes`` sends to LFS (``filter=lfs``)."""
    patterns = []
    for line in gitattributes.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) > 1 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def matches_lfs(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` matches a ``.gitattributes`` pattern (no ``/``: any folder)."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path if "/" in p else name, p.lstrip("/")) for p in patterns)


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

    def has_object(self, sha256: str, size: int) -> bool:
        """Whether the LFS object ``sha256`` is stored whole (``size`` bytes)."""
        path = self.blob(sha256)
        return path.is_file() and path.stat().st_size == size

    def put_object(self, sha256: str, size: int, chunks) -> None:
        """Store the bytes of ``chunks`` as object ``sha256``; refuses other bytes."""
        digest, received = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=self.root / "blobs")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    digest.update(chunk)
                    received += len(chunk)
                    handle.write(chunk)
            if received != size or digest.hexdigest() != sha256:
                raise HubError(400, "BadRequest", f"uploaded {received} bytes with sha256 "
                               f"{digest.hexdigest()}, expected {size} bytes of {sha256}")
            os.replace(tmp, self.blob(sha256))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def commit(
        self,
        repo_id: str,
        branch: str,
        *,
        put: dict[str, bytes],
        delete: list[str],
        summary: str,
        parent: str | None = None,
        lfs: dict[str, tuple[str, int]] | None = None,
    ) -> str:
        """Apply ``put``/``delete`` and ``lfs`` (path → stored object sha256, size) on top of
        ``branch`` and advance it; returns the commit id."""
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
            for path, (sha256, size) in (lfs or {}).items():
                if not self.has_object(sha256, size):
                    raise HubError(422, "UnprocessableEntity",
                                   f"LFS object {sha256} ({size} bytes) of {path} was not uploaded")
                files[path] = {"sha256": sha256, "size": size, "lfs": True,
                               "oid": git_oid(lfs_pointer(sha256, size))}
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

    def handle_one_request(self) -> None:
        self._body_read = False
        super().handle_one_request()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        body = b"".join(self._body_chunks()) if method == "POST" else b""
        for route_method, pattern, name in _ROUTES:
            match = pattern.match(url.path)
            if route_method == method and match:
                args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                try:
                    if method == "POST":
                        self._check_token()
                    getattr(self, f"_{name}")(body=body, **args)
                except HubError as error:
                    self._drain()
                    self._json(error.status, {"error": str(error)}, error=error)
                return
        self._drain()
        self._json(404, {"error": f"no route for {method} {url.path}"})

    def _body_chunks(self):
        """The request body in chunks, from ``Content-Length`` or chunked transfer encoding."""
        if getattr(self, "_body_read", False):
            return
        self._body_read = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk

    def _drain(self) -> None:
        """Read what is left of a request body, so the connection stays usable."""
        for _ in self._body_chunks():
            pass

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
            entry = {"type": "file", "path": name, "size": info["size"], "oid": info["oid"]}
            if info.get("lfs"):
                pointer = lfs_pointer(info["sha256"], info["size"])
                entry["lfs"] = {"oid": info["sha256"], "size": info["size"],
                                "pointerSize": len(pointer)}
            entries.append(entry)
        entries += [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders)]
        self._json(200, entries)

    def _resolve(self, *, repo: str, rev: str, path: str, body: bytes) -> None:
        store = self.server.hub.store
        commit = store.resolve(repo, rev)
        info = store.files(repo, commit).get(path)
        if info is None:
            raise HubError(404, "EntryNotFound", f"{path} not found in {repo}@{commit}", commit)
        if info.get("lfs"):
            self._redirect_to_object(info, commit)
            return
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

    def _redirect_to_object(self, info: dict, commit: str) -> None:
        """As the Hub does for an LFS file: 302 to the object's URL on another host (the
        CDN), the file's metadata in ``X-Linked-*`` headers."""
        headers = {
            "Location": f"{self.server.hub.cdn_url}/lfs/objects/{info['sha256']}",
            "ETag": f'"{info["oid"]}"',
            "X-Linked-Etag": f'"{info["sha256"]}"',
            "X-Linked-Size": str(info["size"]),
            "X-Repo-Commit": commit,
        }
        self._send(302, b"", headers)

    def _lfs_object(self, *, oid: str, body: bytes) -> None:
        """An LFS object's bytes, as a CDN serves them (``Range: bytes=N-`` honoured)."""
        path = self.server.hub.store.blob(oid)
        if not path.is_file():
            raise HubError(404, "NotFound", f"no LFS object {oid}")
        data = path.read_bytes()
        headers = {"ETag": f'"{oid}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        start = _range_start(self.headers.get("Range"))
        if self.command == "HEAD":
            self._send(200, b"", headers, length=len(data))
        elif start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._send(206, data[start:], headers)
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
        """What the Hub checks in a README's metadata when it is committed: ``license``,
        ``datasets`` and ``model-index`` (https://github.com/huggingface/hub-docs,
        modelcard.md); 400 with the errors, as the Hub answers."""
        errors = [{"message": m} for m in card_problems(json.loads(body).get("content", ""))]
        self._json(400 if errors else 200, {"errors": errors, "warnings": []})

    def _preupload(self, *, repo: str, rev: str, body: bytes) -> None:
        """Upload modes: ``lfs`` above the size threshold or for ``.gitattributes`` LFS
        patterns, else ``regular``; ``oid`` of a present file (its sha256 when LFS)."""
        store = self.server.hub.store
        existing = store.files(repo, store.resolve(repo, rev))
        attributes = existing.get(".gitattributes")
        patterns = (lfs_patterns(store.blob(attributes["sha256"]).read_bytes())
                    if attributes else [])
        files = []
        for item in json.loads(body)["files"]:
            path, size = item["path"], int(item.get("size", 0))
            lfs = size > self.server.hub.lfs_threshold or matches_lfs(path, patterns)
            present = existing.get(path, {})
            oid = present.get("sha256") if present.get("lfs") else present.get("oid")
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": files})

    def _lfs_batch(self, *, repo: str, body: bytes) -> None:
        """The git-lfs batch API, ``basic`` transfer: for each object not stored yet, an
        upload action (a signed PUT href) and a verify action."""
        hub, request = self.server.hub, json.loads(body)
        hub.store.resolve(repo, "main")  # 404 for an unknown repo
        if request.get("operation") != "upload":
            raise HubError(400, "BadRequest", f"operation {request.get('operation')!r} unsupported")
        if "basic" not in request.get("transfers", ["basic"]):
            raise HubError(400, "BadRequest", "only the basic transfer is supported")
        objects = []
        for item in request.get("objects", []):
            oid, size = str(item.get("oid")), int(item.get("size", -1))
            if not _OID.match(oid) or size < 0:
                objects.append({"oid": oid, "size": size,
                                "error": {"code": 422, "message": "invalid oid or size"}})
                continue
            answer: dict = {"oid": oid, "size": size, "authenticated": True}
            if not hub.store.has_object(oid, size):
                href = f"{hub.url}/lfs/upload/{repo}/{oid}?size={size}&sig={hub.sign(repo, oid, size)}"
                verify = f"{hub.url}/{repo}.git/info/lfs/objects/verify"
                answer["actions"] = {"upload": {"href": href, "expires_in": 3600},
                                     "verify": {"href": verify, "expires_in": 3600}}
            objects.append(answer)
        payload = json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})
        self._send(200, payload.encode(), {"Content-Type": LFS_CONTENT_TYPE})

    def _lfs_put(self, *, repo: str, oid: str, body: bytes) -> None:
        """The upload href: a PUT of the object's bytes, authorised by its signature."""
        hub = self.server.hub
        size = int(self.query.get("size", ["-1"])[0])
        signature = self.query.get("sig", [""])[0]
        if not hmac.compare_digest(signature, hub.sign(repo, oid, size)):
            raise HubError(403, "Forbidden", "bad or missing upload signature")
        hub.store.put_object(oid, size, self._body_chunks())
        hub.uploads.append((repo, oid, size))
        self._send(200, b"", {})

    def _lfs_verify(self, *, repo: str, body: bytes) -> None:
        request = json.loads(body)
        oid, size = str(request.get("oid")), int(request.get("size", -1))
        if not (_OID.match(oid) and self.server.hub.store.has_object(oid, size)):
            raise HubError(404, "NotFound", f"LFS object {oid} ({size} bytes) is not stored")
        self._json(200, {"success": True})

    def _commit(self, *, repo: str, rev: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        put, delete, lfs = {}, [], {}
        for item in lines:
            value = item["value"]
            if item["key"] == "file":
                put[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                if value.get("algo", "sha256") != "sha256" or not _OID.match(str(value["oid"])):
                    raise HubError(400, "BadRequest", f"bad lfsFile entry {value}")
                lfs[value["path"]] = (value["oid"], int(value["size"]))
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
            lfs=lfs,
        )
        url = f"{self.server.hub.url}/{repo}/commit/{sha}"
        self._json(200, {"success": True, "commitOid": sha, "commitUrl": url})


def card_problems(text: str) -> list[str]:
    """Problems the Hub would find in a model card's YAML metadata."""
    import yaml

    from zoo.hub import HUB_ID_RE, HUB_LICENSES

    match = re.match(r"^---\n(.*?)\n---\n", text, flags=re.DOTALL)
    if match is None:
        return []
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as error:
        return [f"invalid YAML: {error}"]
    problems = []
    if "license" in meta and meta["license"] not in HUB_LICENSES:
        problems.append(f"\"license\" must be one of the Hub's license ids, got {meta['license']!r}")
    if meta.get("license") == "other" and not meta.get("license_name"):
        problems.append("\"license_name\" is required when license is \"other\"")
    for dataset in meta.get("datasets") or []:
        if not isinstance(dataset, str) or not HUB_ID_RE.match(dataset):
            problems.append(f"\"datasets\" must hold Hub dataset ids, got {dataset!r}")
    for i, model in enumerate(meta.get("model-index") or []):
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            problems.append(f"model-index[{i}].name is required")
            continue
        for j, result in enumerate(model.get("results") or []):
            where = f"model-index[{i}].results[{j}]"
            if not isinstance((result.get("task") or {}).get("type"), str):
                problems.append(f"{where}.task.type is required")
            dataset = result.get("dataset") or {}
            if not (isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
                problems.append(f"{where}.dataset.type and .name are required")
            for k, metric in enumerate(result.get("metrics") or [{}]):
                if not isinstance(metric.get("type"), str) or "value" not in metric:
                    problems.append(f"{where}.metrics[{k}].type and .value are required")
    return problems


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

    def __init__(self, root: str | Path, *, port: int = 0, token: str | None = None,
                 lfs_threshold: int = LFS_THRESHOLD) -> None:
        self.store = HubStore(root)
        self.stats = Stats()
        self.token = token
        self.lfs_threshold = lfs_threshold
        self.uploads: list[tuple[str, str, int]] = []  # (repo, oid, size) of each LFS PUT
        self._secret = os.urandom(16)
        self._drops: dict[str, int] = {}
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.hub = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        """Where LFS objects are served: this server under another host name."""
        return f"http://localhost:{self._httpd.server_address[1]}"

    def sign(self, repo: str, oid: str, size: int) -> str:
        """The signature that authorises one object's upload href."""
        message = f"{repo}\n{oid}\n{size}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

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
