"""`vllm-deploy cost`: the arithmetic against hand-worked cases (the quoted cost table's among them), the
price table, the command's table and --json output, and the price table shipping in the wheel."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from components import cost
from components.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()

# ------------------------------------------------- the quoted cost table's numbers

SEED_DEPLOYMENT, SEED_WRAPPER = 1.10, 0.0001


def test_seed_always_on() -> None:
    # $1.10 × 24 × 30 = $792, plus the always-on wrapper 0.0001 × 720 = $0.072.
    assert cost.always_on_monthly(SEED_DEPLOYMENT, 0) == pytest.approx(792.0)
    assert round(cost.always_on_monthly(SEED_DEPLOYMENT, SEED_WRAPPER), 2) == 792.07


def test_seed_two_active_hours_a_day() -> None:
    # $0.07 + $1.10 × 2 × 30 = $66.07: the quoted table counted active hours only (no tail per wake).
    scaled = cost.scale_to_zero_monthly(SEED_DEPLOYMENT, SEED_WRAPPER, active_hours=2, wakes_per_day=0, tail_seconds=900)
    assert round(scaled, 2) == 66.07
    assert round(cost.scale_to_zero_monthly(SEED_DEPLOYMENT, SEED_WRAPPER, 2, wakes_per_day=5, tail_seconds=0), 2) == 66.07
    on = cost.always_on_monthly(SEED_DEPLOYMENT, SEED_WRAPPER)
    fraction = cost.saving(scaled, on)
    assert fraction == pytest.approx(1 - 66.072 / 792.072)
    assert math.floor(fraction * 100) == 91  # the quoted "91% saving" (91.66 % cut down)
    assert round(fraction * 100, 1) == 91.7  # what the command prints
    # And against the table's own $792 (no wrapper in the always-on figure): still 91 %.
    assert math.floor(cost.saving(scaled, 792.0) * 100) == 91


# ---------------------------------------------------------- hand-worked, with a tail


def test_idle_tail_per_wake_is_billed() -> None:
    # $2/h GPU, no wrapper; tail = 900 s idle + 600 s node release + 120 s cold start = 1620 s = 0.45 h.
    # 2 active hours in 2 sessions: 2 + 2 × 0.45 = 2.9 GPU h/day; 2 × 2.9 × 30 = $174.
    assert cost.gpu_hours_per_day(2, 2, 1620) == pytest.approx(2.9)
    assert cost.scale_to_zero_monthly(2.0, 0.0, 2, 2, 1620) == pytest.approx(174.0)
    assert cost.always_on_monthly(2.0, 0.0) == pytest.approx(1440.0)
    assert cost.saving(174.0, 1440.0) == pytest.approx(1 - 174 / 1440)  # 87.9 %


def test_billed_hours_stop_at_a_whole_day() -> None:
    assert cost.gpu_hours_per_day(20, 20, 1620) == 24  # 20 + 9 > 24
    assert cost.scale_to_zero_monthly(2.0, 0.1, 20, 20, 1620) == pytest.approx(cost.always_on_monthly(2.0, 0.1))
    with pytest.raises(ValueError):
        cost.gpu_hours_per_day(25, 0, 0)


def test_default_wakes_one_per_active_hour() -> None:
    assert [cost.default_wakes(h) for h in (0, 0.5, 1, 2, 2.5, 24)] == [0, 1, 1, 2, 3, 24]


def test_break_even() -> None:
    # Fixed wakes: 24 − wakes × tail.  4 wakes × 0.45 h → 22.2 h/day.
    assert cost.break_even_hours(1620, wakes_per_day=4) == pytest.approx(22.2)
    # The quoted table's arithmetic (no tail): only a full day of activity costs as much as always-on.
    assert cost.break_even_hours(1620, wakes_per_day=0) == pytest.approx(24.0)
    # One wake per active hour: h + ceil(h) × 0.45 = 24 → h = 24 − 17 × 0.45 = 16.35 (ceil 17 ✓).
    assert cost.break_even_hours(1620) == pytest.approx(16.35)
    # A 300 s idle timeout, 600 s node release, 120 s cold start = 0.2833 h: 24 − 19 × 0.28333 = 18.6167.
    assert cost.break_even_hours(1020) == pytest.approx(24 - 19 * 1020 / 3600)
    # A tail of a whole day: the GPU is never released.
    assert cost.break_even_hours(86400) == pytest.approx(0.0, abs=1e-9)


def test_warm_containers_are_billed_all_day() -> None:
    # Half the deployment warm: 0.5 × 24 + 0.5 × 2 = 13 GPU h/day at $2/h → $780/month.
    assert cost.scale_to_zero_monthly(2.0, 0.0, 2, 0, 0, warm_fraction=0.5) == pytest.approx(780.0)
    assert cost.scale_to_zero_monthly(2.0, 0.1, 2, 2, 600, warm_fraction=1) == pytest.approx(cost.always_on_monthly(2.0, 0.1))


def test_gpu_count_and_replicas_multiply() -> None:
    assert cost.deployment_hourly(3.0, 2, 2) == 12.0


# -------------------------------------------------------------------- price table


def test_price_table_entries_have_date_and_source() -> None:
    table = cost.price_table()
    assert table["default_provider"] in table["providers"]
    for name, provider in table["providers"].items():
        for gpu, entry in provider["gpus"].items():
            assert entry["hourly"] > 0 and str(entry["date"]).strip() and str(entry["source"]).strip(), (name, gpu)
        assert provider["wrapper"]["hourly"] >= 0
    for entry in table["quoted"].values():
        assert entry["hourly"] > 0 and entry["date"] and entry["source"] and entry["note"]


def test_price_table_holds_the_seed_figures() -> None:
    assert cost.gpu_price("modal-seed", "A100-80GB").hourly == 3.12
    assert cost.quoted_price("seed-8b-autoscale")[0].hourly == 1.10
    assert cost.wrapper_price("modal").hourly == 0.0001
    assert cost.wrapper_price("modal-seed").hourly == 0.0001


def test_price_table_types_are_catalog_types() -> None:
    from components import catalog

    for provider in cost.price_table()["providers"].values():
        assert set(provider["gpus"]) <= set(catalog.GPUS)


# ----------------------------------------------------------------------- command


def _stacks(tmp_path: Path) -> Path:
    files = {
        "seedlike": """
            config:
              vllm-deploy:target: modal
              vllm-deploy:model: {id: meta-llama/Llama-3.1-8B-Instruct}
              vllm-deploy:gpu: {type: A100-80GB, count: 1}
              vllm-deploy:idleTimeout: 120
        """,
        "own": """
            config:
              vllm-deploy:target: kubernetes
              vllm-deploy:model: {id: meta-llama/Llama-3.1-70B-Instruct}
              vllm-deploy:gpu: {type: A100-80GB, count: 2}
              vllm-deploy:vllm: {replicas: 2}
              vllm-deploy:idleTimeout: never
              vllm-deploy:cost: {gpuHourly: 2.0}
        """,
        "cpu": """
            config:
              vllm-deploy:model: {id: Qwen/Qwen2.5-0.5B-Instruct, gated: false}
              vllm-deploy:gpu: {type: none}
        """,
        "h200": """
            config:
              vllm-deploy:target: modal
              vllm-deploy:model: {id: meta-llama/Llama-3.1-8B-Instruct}
              vllm-deploy:gpu: {type: H200}
              vllm-deploy:idleTimeout: 300
        """,
    }
    for name, text in files.items():
        (tmp_path / f"Pulumi.{name}.yaml").write_text(textwrap.dedent(text))
    return tmp_path


def test_command_reproduces_the_seed_table(tmp_path: Path) -> None:
    stacks = _stacks(tmp_path)
    result = runner.invoke(
        app, ["cost", "seedlike", "--stacks-dir", str(stacks), "--quoted", "seed-8b-autoscale", "--wakes-per-day", "0"]
    )
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if l.split()[:3] == ["2", "0", "2.00"])
    assert line.split()[3:] == ["$66.07", "$792.07", "91.7%"]
    assert "break-even: 24.00 active h/day" in result.output
    assert "seed" in result.output


def test_command_json_with_the_modal_tail(tmp_path: Path) -> None:
    stacks = _stacks(tmp_path)
    result = runner.invoke(
        app, ["cost", "seedlike", "--stacks-dir", str(stacks), "--json", "--hours", "2,24", "--gpu-hourly", "1.10"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    # Modal: tail = 120 s scaledown window + 0 node release + 120 s cold start = 240 s; 2 wakes → 2 + 2/15 h.
    assert data["target"] == "modal" and data["node_release_seconds"] == 0
    assert data["tail_seconds_per_wake"] == 240
    two, day = data["rows"]
    assert two["wakes_per_day"] == 2
    assert two["gpu_hours_per_day"] == pytest.approx(2 + 2 * 240 / 3600, abs=1e-4)
    assert two["scale_to_zero_monthly"] == round(0.072 + 1.10 * (2 + 2 * 240 / 3600) * 30, 2)  # $70.47
    assert two["always_on_monthly"] == 792.07 == data["always_on_monthly"]
    assert day["scale_to_zero_monthly"] == 792.07 and day["saving"] == 0
    assert data["gpu_price_basis"] == "option"
    # h + ceil(h) × 240/3600 = 24 → 24 − 23 × 0.0667 = 22.47 (ceil 23 ✓)
    assert data["break_even_active_hours_per_day"] == round(24 - 23 * 240 / 3600, 2)
    assert "formula" in data


def test_command_uses_the_stack_price_count_and_replicas(tmp_path: Path) -> None:
    result = runner.invoke(app, ["cost", "own", "--stacks-dir", str(_stacks(tmp_path)), "--json", "--hours", "4"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["gpu_price_basis"] == "stack" and data["deployment_hourly"] == 8.0  # 2.0 × 2 GPUs × 2 replicas
    assert data["idle_timeout_assumed"] and data["idle_timeout_seconds"] == cost.DEFAULT_IDLE_TIMEOUT_SECONDS
    assert data["always_on_monthly"] == round((8.0 + 0.0001) * 720, 2)
    # Kubernetes: 300 s idle + 600 s node release + 120 s cold start, 4 wakes: 4 + 4 × 1020/3600 h.
    assert data["rows"][0]["scale_to_zero_monthly"] == round(0.072 + 8.0 * (4 + 4 * 1020 / 3600) * 30, 2)


def test_command_default_table_price(tmp_path: Path) -> None:
    result = runner.invoke(app, ["cost", "seedlike", "--stacks-dir", str(_stacks(tmp_path)), "--json", "--hours", "1"])
    data = json.loads(result.output)
    assert data["provider"] == "modal" and data["gpu_hourly"] == cost.gpu_price("modal", "A100-80GB").hourly
    assert data["gpu_price_date"] and data["gpu_price_source"]
    seed = runner.invoke(
        app, ["cost", "seedlike", "--stacks-dir", str(_stacks(tmp_path)), "--json", "--provider", "modal-seed"]
    )
    assert json.loads(seed.output)["gpu_hourly"] == 3.12


def test_modal_min_containers_stay_billed(tmp_path: Path) -> None:
    stacks = _stacks(tmp_path)
    text = (stacks / "Pulumi.seedlike.yaml").read_text() + "  vllm-deploy:modal: {minContainers: 1}\n"
    (stacks / "Pulumi.warm.yaml").write_text(text)
    result = runner.invoke(app, ["cost", "warm", "--stacks-dir", str(stacks), "--json", "--hours", "2"])
    data = json.loads(result.output)
    assert data["rows"][0]["saving"] == 0 and data["break_even_active_hours_per_day"] == 0
    assert any("minContainers" in note for note in data["notes"])


@pytest.mark.parametrize(
    ("stack", "args", "message"),
    [
        ("cpu", [], "gpu.type: none"),
        ("h200", [], "no H200 price for modal"),
        ("seedlike", ["--provider", "nowhere"], "no provider 'nowhere'"),
        ("seedlike", ["--hours", "30"], "within 0…24"),
        ("missing", [], "no stack file"),
    ],
)
def test_command_errors_say_what_to_set(tmp_path: Path, stack: str, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["cost", stack, "--stacks-dir", str(_stacks(tmp_path)), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_cpu_stack_priced_with_an_override(tmp_path: Path) -> None:
    result = runner.invoke(app, ["cost", "cpu", "--stacks-dir", str(_stacks(tmp_path)), "--gpu-hourly", "0.2", "--hours", "24"])
    assert result.exit_code == 0, result.output
    assert "$144.07" in result.output  # (0.2 + 0.0001) × 720


def test_shipped_stacks_price(tmp_path: Path) -> None:
    for stack in ("dev", "prod"):
        result = runner.invoke(app, ["cost", stack, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["rows"]


# -------------------------------------------------------------------- packaging


def test_price_table_ships_in_the_wheel(tmp_path: Path) -> None:
    """Build the wheel from a copy of the sources (not in the shared tree) and look inside."""
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    for package in ("components", "wrapper"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "README.md").write_text("vllm-deploy\n")
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(source), "-w", str(out)],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("vllm_deploy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = yaml.safe_load(archive.read("components/pricing.yaml"))
    assert shipped == yaml.safe_load((REPO / "components" / "pricing.yaml").read_text())
