"""`.ci/pr-comment` against a local stand-in of GitHub's issue-comments REST API.

Modelled on docs.github.com/en/rest/issues/comments: GET …/issues/{n}/comments lists oldest first,
paged with a `Link: <url>; rel="next"` header; POST creates (201); PATCH …/issues/comments/{id}
updates (200); a Bearer token is required.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tests.ci.conftest import ROOT

SCRIPT = ROOT / ".ci" / "pr-comment"
PAGE = 2  # small pages, so the marker is found past the first one


class FakeGitHub:
    def __init__(self) -> None:
        self.comments: list[dict] = [
            {"id": 1, "body": "LGTM"},
            {"id": 2, "body": "a question"},
            {"id": 3, "body": "ok"},
        ]
        self.requests: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        github = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: object, link: str = "") -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if link:
                    self.send_header("Link", link)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") != "Bearer t0ken":
                    self._reply(401, {"message": "Requires authentication"})
                    return False
                return True

            def do_GET(self) -> None:
                github.requests.append(("GET", self.path))
                if not self._authorised():
                    return
                url = urlparse(self.path)
                page = int(parse_qs(url.query).get("page", ["1"])[0])
                chunk = github.comments[(page - 1) * PAGE : page * PAGE]
                more = page * PAGE < len(github.comments)
                link = f'<{github.url}{url.path}?per_page=100&page={page + 1}>; rel="next"' if more else ""
                self._reply(200, chunk, link)

            def do_POST(self) -> None:
                github.requests.append(("POST", self.path))
                if self._authorised():
                    comment = {"id": max(c["id"] for c in github.comments) + 1, "body": self._body()["body"]}
                    github.comments.append(comment)
                    self._reply(201, comment)

            def do_PATCH(self) -> None:
                github.requests.append(("PATCH", self.path))
                if self._authorised():
                    comment = next(c for c in github.comments if self.path.endswith(f"/comments/{c['id']}"))
                    comment["body"] = self._body()["body"]
                    self._reply(200, comment)

        return Handler


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
    thread.join()


def comment(github: FakeGitHub, stack: str, report: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "GH_TOKEN": "t0ken",
        "PR": "7",
        "GITHUB_REPOSITORY": "team/vllm-deploy",
        "GITHUB_API_URL": github.url,
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "42",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), stack, str(report)], env=env, capture_output=True, text=True, timeout=30
    )


def test_one_comment_per_stack_is_created_then_updated_in_place(github: FakeGitHub, tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    report.write_text("### ✅ `preview` of `dev` (kubernetes) succeeded: + 3 to create\n")
    assert comment(github, "dev", report).returncode == 0
    assert comment(github, "prod", report).returncode == 0
    report.write_text("### ❌ `preview` of `dev` failed — missing: **cluster access**\n")
    result = comment(github, "dev", report)
    assert result.returncode == 0, result.stderr
    ours = [c for c in github.comments if c["body"].startswith("<!-- vllm-deploy preview:")]
    assert len(ours) == 2  # dev's was updated, not posted again
    dev = next(c for c in ours if "preview: dev -->" in c["body"])
    assert "missing: **cluster access**" in dev["body"] and "actions/runs/42" in dev["body"]
    assert ("PATCH", f"/repos/team/vllm-deploy/issues/comments/{dev['id']}") in github.requests
    assert [c["body"] for c in github.comments[:3]] == ["LGTM", "a question", "ok"]  # others' comments untouched


def test_a_job_that_failed_before_the_preview_still_gets_a_comment_saying_so(
    github: FakeGitHub, tmp_path: Path
) -> None:
    result = comment(github, "modal-dev", tmp_path / "never-written.md")
    assert result.returncode == 0, result.stderr
    body = github.comments[-1]["body"]
    assert body.startswith(
        "<!-- vllm-deploy preview: modal-dev -->\n### ❌ `preview` of `modal-dev` failed before Pulumi ran"
    )
    assert "https://github.com/team/vllm-deploy/actions/runs/42" in body
