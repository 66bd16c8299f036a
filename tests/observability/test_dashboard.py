"""The dashboard's shape: what Grafana needs to import it and what the issue asks every panel to have."""

from __future__ import annotations

from components.observability import dashboard_model

WANTED_TOPICS = [
    "Requests/s by status", "Errors/s by status", "Tokens/s in and out", "Time to first token",
    "End-to-end request latency", "Requests running / waiting per replica", "KV-cache usage",
    "Prefix-cache hit rate", "replicas: answering / ready / desired", "Scale state", "Wakes from zero",
    "Wake time", "added latency", "Streams in flight",
]


def panels() -> list[dict]:
    return [p for p in dashboard_model()["panels"] if p["type"] != "row"]


def test_variables_for_datasource_namespace_and_model() -> None:
    dashboard = dashboard_model()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "namespace)" in variables["namespace"]["query"]["query"]
    assert "model_name)" in variables["model"]["query"]["query"]
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] == "vllm-deploy"


def test_every_panel_is_titled_unit_labelled_and_on_the_datasource_variable() -> None:
    for panel in panels():
        assert panel["title"] and panel["description"], panel
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and all(t["expr"] and t["datasource"] == panel["datasource"] for t in panel["targets"])
        assert all('namespace=~"$namespace"' in t["expr"] for t in panel["targets"]), panel["title"]


def test_the_panels_the_issue_lists_are_there() -> None:
    titles = [p["title"] for p in panels()]
    for topic in WANTED_TOPICS:
        assert any(topic in t for t in titles), topic


def test_panels_do_not_overlap() -> None:
    cells = set()
    for panel in dashboard_model()["panels"]:
        g = panel["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, panel["title"]
        assert g["x"] + g["w"] <= 24
        cells |= mine
