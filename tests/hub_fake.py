"""A loopback stand-in for the Hugging Face Hub's HTTP API (not a test file).

The Hub is the one service these tests cannot reach, so `toolkit push` runs against this server
(`HF_ENDPOINT=http://127.0.0.1:PORT`) and the tests check the exact requests `huggingface_hub`
made: repository creation, branch, pre-upload, the commit with its files, the tag. It keeps each
repository's files per revision (regular uploads: every file is sent inline in the commit),
answers what huggingface_hub asks before a commit, and refuses an existing tag with 409 as the Hub does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)

    def ndjson(self) -> list[dict]:
        return [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]


@dataclass
class FakeHub:
    requests: list[Request] = field(default_factory=list)
    repos: dict = field(default_factory=dict)  # repo id -> {"private": bool, "revisions": {name: {path: bytes}}, "tags": {tag: commit}, "commits": [...]}
    commits: int = 0
    types: dict = field(default_factory=dict)  # repo id -> "dataset" | "model"

    def start(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _handle(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("transfer-encoding") == "chunked":
                    body = _read_chunked(self.rfile)
                url = urlparse(self.path)
                req = Request(self.command, unquote(url.path), url.query, dict(self.headers), body)
                hub.requests.append(req)
                status, payload, *extra = hub.answer(req)
                headers = extra[0] if extra else {}
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/octet-stream" if isinstance(payload, bytes) else "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                if status >= 400 and isinstance(payload, dict):
                    self.send_header("x-error-message", payload.get("error", ""))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self

    def stop(self):
        if getattr(self, "server", None) is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- the API ---------------------------------------------------------------------------------

    def files_at(self, repo: dict, rev: str) -> tuple[str, dict] | None:
        """(commit, files) at a branch, a tag or a commit."""
        if rev in repo["revisions"]:
            return repo["heads"].get(rev, "0" * 40), repo["revisions"][rev]
        commit = repo["tags"].get(rev, rev)
        return (commit, repo["snapshots"][commit]) if commit in repo["snapshots"] else None

    def create(self, repo_id: str, files: dict | None = None, private: bool = False) -> str | None:
        """A new repo, as `create_repo` makes it; with `files` (path -> bytes), their first commit on main, whose id it returns."""
        self.repos[repo_id] = {"private": private, "revisions": {"main": {}}, "tags": {}, "commits": [], "snapshots": {}, "heads": {}}
        return self.commit(repo_id, files) if files else None

    def commit(self, repo_id: str, changes: dict, rev: str = "main") -> str:
        """A new commit on `rev`: each path to its bytes, or None to delete it; its id. The files at a commit never
        change, as on the Hub."""
        repo = self.repos[repo_id]
        files = dict(repo["revisions"].setdefault(rev, {}))
        for path, data in changes.items():
            if data is None:
                files.pop(path, None)
            else:
                files[path] = data
        self.commits += 1
        oid = hashlib.sha1(f"{repo_id}{self.commits}".encode()).hexdigest()
        repo["revisions"][rev] = files
        repo["commits"].append(oid)
        repo["snapshots"][oid] = dict(files)
        repo["heads"][rev] = oid
        return oid

    def answer(self, r: Request) -> tuple:
        parts = r.path.strip("/").split("/")
        if parts and parts[0] not in ("api", "datasets"):  # a model's file: /{owner}/{name}/resolve/... has no type prefix
            parts = ["models", *parts]
        if len(parts) >= 6 and parts[0] in ("datasets", "models") and parts[3] == "resolve":  # a file download (HEAD for its metadata, then GET)
            repo = self.repos.get(f"{parts[1]}/{parts[2]}")
            at = self.files_at(repo, unquote(parts[4])) if repo else None
            path = "/".join(parts[5:])
            if at is None or path not in at[1]:
                return 404, {"error": "Entry not found"}, {"x-error-code": "EntryNotFound"}
            data = at[1][path]
            return 200, data, {"x-repo-commit": at[0], "etag": f'"{git_hash(data)}"'}
        if r.method == "POST" and r.path == "/api/repos/create":
            body = r.json()
            repo_id = f"{body.get('organization') or 'me'}/{body['name']}" if "/" not in body["name"] else body["name"]
            self.types[repo_id] = body.get("type", "model")
            if repo_id in self.repos:
                return 409, {"error": "You already created this dataset repo", "url": f"{self.url}/datasets/{repo_id}"}
            self.create(repo_id, private=body.get("visibility", "private") == "private")
            return 200, {"url": f"{self.url}/datasets/{repo_id}"}
        if r.method == "POST" and r.path == "/api/validate-yaml":  # the Hub's check of a card's YAML header, in part
            errors = _card_errors(r.json()["content"])
            return (400, {"errors": [{"message": e} for e in errors]}) if errors else (200, {"warnings": []})
        if len(parts) == 4 and parts[0] == "api" and parts[1] in ("datasets", "models") and r.method == "GET":  # repo info at main
            parts = [*parts, "revision", "main"]
        if len(parts) >= 5 and parts[0] == "api" and parts[1] in ("datasets", "models"):
            repo_id, action, rest = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
            repo = self.repos.get(repo_id)
            if repo is None:
                return 404, {"error": "Repository not found"}, {"x-error-code": "RepoNotFound"}
            if action == "branch" and r.method == "POST":
                repo["revisions"].setdefault(rest, dict(repo["revisions"]["main"]))
                return 200, {}
            if action == "preupload":  # every file inline ("regular"), with the oid of the file already there, as the Hub answers
                have = repo["revisions"].get(rest or "main", {})
                return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                        **({"oid": git_hash(have[f["path"]])} if f["path"] in have else {})} for f in r.json()["files"]]}
            if action in ("tree", "paths-info"):
                rev, _, under = (rest or "main").partition("/")
                at = self.files_at(repo, unquote(rev))
                if at is None:
                    return 404, {"error": "Revision not found"}
                files = {p: b for p, b in at[1].items() if not under or p.startswith(under.rstrip("/") + "/")}
                dirs = sorted({str(Path(p).parent) for p in files} - {".", under.rstrip("/")})
                if "recursive=true" not in r.query:  # one level: the files and folders directly under `under`
                    depth = len(Path(under).parts) + 1 if under else 1
                    dirs = sorted({"/".join(Path(p).parts[:depth]) for p in files if len(Path(p).parts) > depth})
                    files = {p: b for p, b in files.items() if len(Path(p).parts) == depth}
                return 200, ([{"type": "directory", "path": d, "oid": "0" * 40, "size": 0} for d in dirs]
                             + [{"type": "file", "path": p, "size": len(b), "oid": git_hash(b)} for p, b in sorted(files.items())])
            if action == "commit" and r.method == "POST":
                changes = {}
                for line in r.ndjson():
                    if line["key"] == "file":
                        changes[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                    elif line["key"] == "deletedFile":
                        changes[line["value"]["path"]] = None
                oid = self.commit(repo_id, changes, rest or "main")
                return 200, {"commitUrl": f"{self.url}/datasets/{repo_id}/commit/{oid}", "commitOid": oid, "success": True}
            if action == "tag" and r.method == "POST":
                tag = r.json()["tag"]
                if tag in repo["tags"]:
                    return 409, {"error": f"Tag {tag} already exists"}
                repo["tags"][tag] = rest
                return 200, {}
            if action == "revision":
                at = self.files_at(repo, unquote(rest) or "main")
                if at is None:
                    return 404, {"error": "Revision not found"}, {"x-error-code": "RevisionNotFound"}
                return 200, {"id": repo_id, "sha": at[0], "private": repo["private"], "siblings": [{"rfilename": p} for p in sorted(at[1])]}
        return 404, {"error": f"the fake Hub has no {r.method} {r.path}"}


def git_hash(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _card_errors(content: str) -> list[str]:
    import yaml

    if not content.startswith("---\n"):
        return ["no YAML header"]
    try:
        meta = yaml.safe_load(content[4 : content.index("\n---", 4)])
    except (ValueError, yaml.YAMLError) as e:
        return [f"invalid YAML: {e}"]
    errors = []
    for c in meta.get("configs") or []:
        if not c.get("config_name") or not c.get("data_files"):
            errors.append(f"config {c} needs config_name and data_files")
    if sum(1 for c in meta.get("configs") or [] if c.get("default")) > 1:
        errors.append("more than one default config")
    if meta.get("license") == "other" and not meta.get("license_name"):
        errors.append("license: other needs license_name")
    return errors


def _read_chunked(stream) -> bytes:
    out = b""
    while True:
        size = int(stream.readline().strip() or b"0", 16)
        if size == 0:
            stream.readline()
            return out
        out += stream.read(size)
        stream.readline()
