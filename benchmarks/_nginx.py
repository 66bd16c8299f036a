"""nginx as a plain reverse proxy for the benchmark: the C floor for one more HTTP hop.

Debian's nginx (``.ci/install-nginx``), one process (``master_process off``, so the CPU figure
is that process's), keep-alive to the upstream, no buffering either way, HTTP/1.1 upstream, and
its default access log (a line per request, as the wrapper writes).
Its config, pid file, temp paths and error log live in ``workdir`` (the benchmark's temp dir).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.ports import free_port
from tests.support.processes import REPO_ROOT, ServerProcess

# One process (its CPU is the figure), files in the benchmark's temp dir; each config adds its server.
PROCESS = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    {access_log}
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
"""

CONF = (
    PROCESS
    + """\
    client_max_body_size 64m;
    upstream backend {{
        server {upstream};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
{auth}        }}
    }}
}}
"""
)

# Answering every request itself: nginx's cost per request with no upstream
# (benchmarks/server_floor_bench.py).
CONF_FIXED_ANSWER = (
    PROCESS
    + """\
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""
)


def nginx_binary() -> str:
    """The nginx binary, installed by ``.ci/install-nginx`` when missing."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        subprocess.run(["bash", str(REPO_ROOT / ".ci" / "install-nginx")], check=True)
        found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found


def nginx_command(workdir: Path, conf: Path) -> list[str]:
    return [nginx_binary(), "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]


class Nginx(ServerProcess):
    """nginx in front of ``upstream_base`` (an OpenAI base URL, ``.../v1``), on 127.0.0.1."""

    def __init__(self, upstream_base: str, workdir: Path, api_key: str | None = None, access_log: bool = True) -> None:
        """``access_log``: one line per request to a file, nginx's default (the wrapper writes one too)."""
        port = free_port()
        u = urlsplit(upstream_base)
        workdir.mkdir(parents=True, exist_ok=True)
        # The upstream key is added by the proxy, as the wrapper adds VLLM_API_KEY.
        auth = f'            proxy_set_header Authorization "Bearer {api_key}";\n' if api_key else ""
        conf = workdir / "nginx.conf"
        log = f"access_log {workdir}/access.log;" if access_log else "access_log off;"
        conf.write_text(CONF.format(dir=workdir, upstream=u.netloc, port=port, auth=auth, access_log=log))
        conf.chmod(0o600)
        super().__init__(nginx_command(workdir, conf), port, ready="/health")
        self.base_url = self.url + u.path


class NginxFixedAnswer(ServerProcess):
    """nginx answering every request with ``body`` itself (a 200, application/json)."""

    def __init__(self, body: str, workdir: Path) -> None:
        port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "nginx.conf"
        conf.write_text(
            CONF_FIXED_ANSWER.format(dir=workdir, port=port, body=body, access_log=f"access_log {workdir}/access.log;")
        )
        super().__init__(nginx_command(workdir, conf), port, ready="/")
