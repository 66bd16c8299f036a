"""Draw charts/vllm-deploy/dashboards/vllm-deploy.json from a real Prometheus into a PNG.

No Grafana runs here, so this evaluates each panel's own PromQL (the same text Grafana would
send, variables filled in) with Prometheus' HTTP API and plots it with matplotlib, panel by
panel in the dashboard's order. tests/observability/test_live.py calls it on the Prometheus
it scrapes a real wrapper and vLLM with; to refresh the README's picture:

    OBSERVABILITY_PNG=charts/vllm-deploy/dashboards/dashboard.png \\
        .venv/bin/python -m pytest tests/observability/test_live.py

or against any Prometheus that scrapes a release:

    .venv/bin/python benchmarks/dashboard_png.py --prometheus http://127.0.0.1:9090 \\
        --namespace vllm-dev --minutes 30 --out dashboard.png
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, PercentFormatter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from components.observability import dashboard_model, dashboard_queries  # noqa: E402

COLUMNS = 3
UNIT_LABELS = {"reqps": "req/s", "s": "seconds", "percentunit": "%", "short": "count", "bool": "0 / 1"}


def unit_label(unit: str) -> str:
    return unit.removeprefix("suffix:").strip() if unit.startswith("suffix:") else UNIT_LABELS.get(unit, unit)


def legend(fmt: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "")
    return text.strip() or ", ".join(f"{k}={v}" for k, v in labels.items()) or "value"


def _api(client: httpx.Client, path: str, **params: Any) -> Any:
    body = client.get("/api/v1/" + path, params=params).json()
    if body.get("status") != "success":
        raise RuntimeError(f"{params.get('query')}: {body.get('error')}")
    return body["data"]["result"]


def _format_value(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "no data"
    if unit == "percentunit":
        return f"{value:.1%}"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:g} {unit_label(unit) if unit not in ('short',) else ''}".strip()


def render(
    prometheus_url: str,
    out: Path,
    *,
    namespace: str = ".*",
    model: str = ".*",
    start: float,
    end: float,
    step: float = 2.0,
    rate_interval: str = "1m",
) -> dict[str, int]:
    """Write the PNG; return {panel title: series drawn} (0 means an empty panel)."""
    dashboard = dashboard_model()
    queries = dashboard_queries(
        dashboard,
        namespace=namespace,
        model=model,
        rate_interval=rate_interval,
        time_range=f"{max(1, int(end - start))}s",
    )
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    rows = math.ceil(len(panels) / COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(6.2 * COLUMNS, 3.4 * rows), squeeze=False)
    fig.suptitle(f"{dashboard['title']} — namespace {namespace}, model {model}", fontsize=15, y=0.995)
    drawn: dict[str, int] = {}
    with httpx.Client(base_url=prometheus_url, timeout=30) as client:
        for ax, panel in zip(axes.flat, panels, strict=False):
            unit = panel["fieldConfig"]["defaults"]["unit"]
            ax.set_title(panel["title"], fontsize=11, loc="left")
            mine = [(t, q) for p, t, q in queries if p is panel]
            count = 0
            if panel["type"] == "stat":
                lines = []
                for target, expr in mine:
                    for series in _api(client, "query", query=expr, time=end):
                        value = float(series["value"][1])
                        lines.append(f"{legend(target.get('legendFormat', ''), series['metric'])}: {_format_value(value, unit)}")
                        count += math.isfinite(value)
                ax.axis("off")
                ax.text(0.5, 0.5, "\n".join(lines) or "no data", ha="center", va="center", fontsize=17, transform=ax.transAxes)
            else:
                for target, expr in mine:
                    for series in _api(client, "query_range", query=expr, start=start, end=end, step=step):
                        xs = [float(t) - end for t, _ in series["values"]]
                        ys = [float(v) for _, v in series["values"]]
                        if any(math.isfinite(y) for y in ys):
                            ax.plot(xs, ys, label=legend(target.get("legendFormat", ""), series["metric"]), linewidth=1.4)
                            count += 1
                ax.set_xlabel("seconds before now", fontsize=8)
                ax.set_ylabel(unit_label(unit), fontsize=9)
                ax.tick_params(labelsize=8)
                ax.grid(alpha=0.3)
                if unit == "percentunit":
                    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
                elif unit == "s":
                    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 1000:.0f} ms" if abs(v) < 1 else f"{v:.1f} s"))
                    ax.set_ylabel("")
                if count:
                    ax.legend(fontsize=7, loc="upper left")
                else:
                    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            drawn[panel["title"]] = count
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return drawn


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prometheus", required=True, help="Prometheus base URL")
    ap.add_argument("--namespace", default=".*")
    ap.add_argument("--model", default=".*")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--out", type=Path, default=Path("dashboard.png"))
    args = ap.parse_args(argv)
    end = time.time()
    start = end - args.minutes * 60
    drawn = render(args.prometheus, args.out, namespace=args.namespace, model=args.model, start=start, end=end,
                   step=max(1.0, (end - start) / 300))
    for title, n in drawn.items():
        print(f"{n:3d} series  {title}")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
