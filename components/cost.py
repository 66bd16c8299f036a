"""`vllm-deploy cost STACK`: what a stack costs a month, always on vs scaled to zero.

The arithmetic is a handful of pure functions at the top of this module; the price
table is `components/pricing.yaml` (package data); the command and its table are in
`components/cli/cost.py`.

The formula (all prices per hour, a month is ``DAYS_PER_MONTH`` = 30 days, as in the quoted cost table):

    deployment/h  = gpu_hourly × gpu.count × vllm.replicas
    always_on     = (deployment/h + wrapper/h) × 24 × 30

    tail          = idleTimeout + node_release + cold_start          (seconds, per wake)
    gpu_h/day     = min(24, active_h/day + wakes/day × tail / 3600)
    scale_to_zero = wrapper/h × 24 × 30 + deployment/h × gpu_h/day × 30
                    (on Modal, containers kept warm by modal.minContainers count 24 h/day)

    saving        = 1 − scale_to_zero / always_on
    worst_case    = (gpu_hourly × gpu.count × modal.maxContainers + wrapper/h) × 24 × 30
                    (Modal: the most the bounds allow, every GPU container busy all month)
    break-even    = the least active_h/day at which gpu_h/day reaches 24: from there on the
                    GPU never gets released, scaling to zero saves nothing and only adds
                    cold starts, so always-on is the better choice.

Why the tail: a scaled-to-zero GPU is not paid for the active hours only. Every time the
deployment wakes, the GPU is billed while vLLM starts (`cold_start`: image, weights, CUDA
graphs) and, after the last request, for the whole idle timeout before it is released. On
Kubernetes the node itself outlives the pod: cluster-autoscaler removes an unneeded node
only after `--scale-down-unneeded-time` (10 min by default), and the node is what the
cloud bills (`node_release`, 0 on Modal, which bills the container). How many wakes a day
is the unknown that matters: by default one per active hour (`ceil(active_h)`, traffic in
hour-long sessions with quiet gaps longer than the idle timeout between them); pass the
real figure when you know it.

The quoted cost table (README, `--quoted`) counted the active hours only, i.e. wakes/day × tail = 0 (its
"2 active hours" were the GPU's running hours). With its $1.10/h deployment and
$0.0001/h wrapper the same formula gives its numbers: 0.0001 × 24 × 30 + 1.10 × 2 × 30 =
$66.07/month scaled to zero, (1.10 + 0.0001) × 24 × 30 = $792.07 always on (the table's $792
left out the $0.07 wrapper), a saving of 91.66 % (the table's "91%" is that figure cut down).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from components.targets import target_of

DAYS_PER_MONTH = 30
HOURS_PER_DAY = 24
DEFAULT_HOURS = (0.5, 1, 2, 4, 8, 12, 16, 20, 24)
# Assumed when the command is not told: vLLM's start on a warm node/image (the hand-built deployments saw
# 1–2 min on Modal with a warm image, 5–10 min on a first download).
DEFAULT_COLD_START_SECONDS = 120
# The scale-to-zero column of a stack that is always on assumes this idle timeout.
DEFAULT_IDLE_TIMEOUT_SECONDS = 300


class CostError(ValueError):
    """The stack cannot be priced as it is; the message says what to set."""


# ----------------------------------------------------------------- arithmetic


def deployment_hourly(gpu_hourly: float, gpu_count: int = 1, replicas: int = 1) -> float:
    """What the vLLM side costs per hour while it runs."""
    return gpu_hourly * gpu_count * replicas


def always_on_monthly(deployment_per_hour: float, wrapper_per_hour: float, days: float = DAYS_PER_MONTH) -> float:
    return (deployment_per_hour + wrapper_per_hour) * HOURS_PER_DAY * days


def default_wakes(active_hours: float) -> int:
    """One wake per active hour (hour-long sessions with quiet gaps between them)."""
    return math.ceil(active_hours) if active_hours > 0 else 0


def gpu_hours_per_day(active_hours: float, wakes_per_day: float, tail_seconds: float) -> float:
    """Hours a day the GPU is billed: the active hours plus one tail per wake, at most 24."""
    if not 0 <= active_hours <= HOURS_PER_DAY:
        raise ValueError(f"active hours per day must be within 0…24, not {active_hours}")
    if wakes_per_day < 0 or tail_seconds < 0:
        raise ValueError("wakes per day and the tail must not be negative")
    return min(float(HOURS_PER_DAY), active_hours + wakes_per_day * tail_seconds / 3600)


def scale_to_zero_monthly(
    deployment_per_hour: float,
    wrapper_per_hour: float,
    active_hours: float,
    wakes_per_day: float = 0,
    tail_seconds: float = 0,
    days: float = DAYS_PER_MONTH,
    warm_fraction: float = 0.0,
) -> float:
    """`warm_fraction`: the share of the deployment kept warm all day (Modal's minContainers)."""
    billed = gpu_hours_per_day(active_hours, wakes_per_day, tail_seconds)
    gpu_hours = warm_fraction * HOURS_PER_DAY + (1 - warm_fraction) * billed
    return wrapper_per_hour * HOURS_PER_DAY * days + deployment_per_hour * gpu_hours * days


def saving(scaled: float, always_on: float) -> float:
    """Fraction of the always-on bill that scaling to zero saves (0 when nothing is paid)."""
    return 0.0 if always_on <= 0 else 1 - scaled / always_on


def break_even_hours(tail_seconds: float, wakes_per_day: float | None = None) -> float:
    """Least active hours/day at which the GPU is billed all day (scale-to-zero = always-on).

    `wakes_per_day` None means the default rule (one per active hour), whose billed hours
    jump at each whole hour; the function is monotone, so bisection finds the edge.
    """

    def billed(hours: float) -> float:
        wakes = default_wakes(hours) if wakes_per_day is None else wakes_per_day
        return gpu_hours_per_day(hours, wakes, tail_seconds)

    if billed(0.0) >= HOURS_PER_DAY:
        return 0.0
    low, high = 0.0, float(HOURS_PER_DAY)  # billed(low) < 24 <= billed(high)
    for _ in range(60):
        middle = (low + high) / 2
        if billed(middle) >= HOURS_PER_DAY:
            high = middle
        else:
            low = middle
    return high


# ---------------------------------------------------------------- price table


@dataclass(frozen=True)
class Price:
    hourly: float
    date: str
    source: str


@lru_cache(maxsize=1)
def price_table() -> dict[str, Any]:
    """`components/pricing.yaml`, read from the installed package."""
    text = resources.files("components").joinpath("pricing.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _price(entry: dict[str, Any]) -> Price:
    return Price(float(entry["hourly"]), str(entry["date"]), " ".join(str(entry["source"]).split()))


def gpu_price(provider: str, gpu_type: str, table: dict[str, Any] | None = None) -> Price:
    table = table or price_table()
    providers = table["providers"]
    if provider not in providers:
        raise CostError(f"no provider {provider!r} in the price table (providers: {', '.join(providers)})")
    gpus = providers[provider].get("gpus") or {}
    if gpu_type not in gpus:
        raise CostError(
            f"the price table has no {gpu_type} price for {provider} (it lists {', '.join(gpus) or 'none'}); "
            "set cost.gpuHourly in the stack or pass --gpu-hourly"
        )
    return _price(gpus[gpu_type])


def wrapper_price(provider: str, table: dict[str, Any] | None = None) -> Price:
    table = table or price_table()
    entry = (
        table["providers"].get(provider, {}).get("wrapper") or table["providers"][table["default_provider"]]["wrapper"]
    )
    return _price(entry)


def quoted_price(name: str, table: dict[str, Any] | None = None) -> tuple[Price, dict[str, Any]]:
    table = table or price_table()
    quoted = table.get("quoted") or {}
    if name not in quoted:
        raise CostError(f"no quoted figure {name!r} (quoted: {', '.join(quoted) or 'none'})")
    return _price(quoted[name]), quoted[name]


# -------------------------------------------------------------------- estimate


@dataclass(frozen=True)
class Row:
    active_hours_per_day: float
    wakes_per_day: float
    gpu_hours_per_day: float
    scale_to_zero_monthly: float
    always_on_monthly: float
    saving: float


@dataclass
class Estimate:
    """Inputs and results of one stack's estimate; `to_json()` is the `--json` document."""

    stack: str
    target: str
    gpu_type: str
    gpu_count: int
    replicas: int
    provider: str
    gpu_hourly: float
    gpu_price_basis: str  # "stack", "option", "table", "quoted:<name>"
    gpu_price_date: str
    gpu_price_source: str
    deployment_hourly: float
    wrapper_hourly: float
    wrapper_price_source: str
    idle_timeout_seconds: int
    idle_timeout_assumed: bool
    cold_start_seconds: float
    node_release_seconds: float
    wakes_per_day: float | None  # None: one per active hour
    days_per_month: float
    always_on_monthly: float
    break_even_active_hours_per_day: float
    # Modal: the ceiling modal.maxContainers allows (every GPU container busy all month).
    max_containers: int | None = None
    worst_case_monthly: float | None = None
    # Modal: the most one request can hold a GPU container (modal.functionTimeout).
    request_timeout_seconds: int | None = None
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def tail_seconds(self) -> float:
        return self.idle_timeout_seconds + self.node_release_seconds + self.cold_start_seconds

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # Money in cents, fractions and hours to 4 places: what a CI check compares.
        for key in ("always_on_monthly", "worst_case_monthly"):
            if data[key] is not None:
                data[key] = round(data[key], 2)
        data["break_even_active_hours_per_day"] = round(data["break_even_active_hours_per_day"], 2)
        for row in data["rows"]:
            row["scale_to_zero_monthly"] = round(row["scale_to_zero_monthly"], 2)
            row["always_on_monthly"] = round(row["always_on_monthly"], 2)
            row["gpu_hours_per_day"] = round(row["gpu_hours_per_day"], 4)
            row["saving"] = round(row["saving"], 4) + 0.0
        data["tail_seconds_per_wake"] = self.tail_seconds
        data["formula"] = FORMULA
        return data


FORMULA = (
    "always_on = (gpu_hourly*gpu_count*replicas + wrapper_hourly)*24*days; "
    "gpu_hours_per_day = min(24, active_hours + wakes_per_day*(idle_timeout + node_release + cold_start)/3600); "
    "scale_to_zero = wrapper_hourly*24*days + gpu_hourly*gpu_count*replicas*gpu_hours_per_day*days; "
    "saving = 1 - scale_to_zero/always_on"
)


def estimate(
    config: Any,
    stack: str = "",
    *,
    hours: tuple[float, ...] | list[float] = DEFAULT_HOURS,
    provider: str | None = None,
    gpu_hourly: float | None = None,
    quoted: str | None = None,
    wrapper_hourly: float | None = None,
    idle_timeout: float | None = None,
    cold_start: float = DEFAULT_COLD_START_SECONDS,
    node_release: float | None = None,
    wakes_per_day: float | None = None,
    days: float = DAYS_PER_MONTH,
    table: dict[str, Any] | None = None,
) -> Estimate:
    """The estimate for a `StackConfig`; keyword arguments override the stack and the table."""
    table = table or price_table()
    notes: list[str] = []
    target = target_of(config)
    provider = provider or config.cost.provider or table["default_provider"]
    count, replicas = (1 if config.gpu.is_cpu else config.gpu.count), config.vllm.max_replicas

    if quoted:
        price, entry = quoted_price(quoted, table)
        basis, hourly_per_gpu = f"quoted:{quoted}", price.hourly / int(entry.get("count", 1))
        notes.append(f"quoted figure {quoted}: {' '.join(str(entry.get('note', '')).split())}".strip())
    elif gpu_hourly is not None:
        price, basis, hourly_per_gpu = Price(gpu_hourly, "given", "--gpu-hourly"), "option", gpu_hourly
    elif config.cost.gpu_hourly is not None:
        price = Price(config.cost.gpu_hourly, "given", "the stack's cost.gpuHourly")
        basis, hourly_per_gpu = "stack", config.cost.gpu_hourly
    elif config.gpu.is_cpu:
        raise CostError(
            f"stack {stack or '(given)'} runs vLLM on CPU (gpu.type: none), which the price table does not price; "
            "set cost.gpuHourly to what one vLLM replica costs you per hour, or pass --gpu-hourly"
        )
    else:
        price = gpu_price(provider, config.gpu.type, table)
        basis, hourly_per_gpu = "table", price.hourly
        if target.prices_stand_in and config.cost.provider is None:
            notes.append(
                f"{provider} list prices stand in for your cluster's: set cost.provider or cost.gpuHourly "
                "for what your cloud charges"
            )

    wrapper = (
        Price(wrapper_hourly, "given", "--wrapper-hourly")
        if wrapper_hourly is not None
        else wrapper_price(provider, table)
    )
    idle_assumed = False
    if idle_timeout is None:
        idle_timeout = config.idle_timeout
        if not idle_timeout:
            idle_timeout, idle_assumed = DEFAULT_IDLE_TIMEOUT_SECONDS, True
            notes.append(
                f"the stack is always on (idleTimeout: never); the scale-to-zero column assumes "
                f"idleTimeout {DEFAULT_IDLE_TIMEOUT_SECONDS} s (--idle-timeout to change)"
            )
    if node_release is None:
        node_release = target.node_release_seconds
    warm_fraction = 0.0
    if warm := target.kept_warm(config):
        warm_fraction = warm.replicas / replicas
        notes.append(
            f"{warm.setting} keeps {warm.replicas} of {replicas} GPU container(s) warm: "
            "billed all day in the scale-to-zero column too"
        )
    if wakes_per_day == 0:
        notes.append("wakes per day 0: active hours count as the GPU's billed hours (the quoted table's arithmetic)")

    per_hour = deployment_hourly(hourly_per_gpu, count, replicas)
    on = always_on_monthly(per_hour, wrapper.hourly, days)
    bounds = target.cost_bounds(config)
    worst = None
    if bounds is not None:
        worst = always_on_monthly(deployment_hourly(hourly_per_gpu, count, bounds.max_containers), wrapper.hourly, days)
    tail = idle_timeout + node_release + cold_start
    rows = []
    for active in hours:
        wakes = default_wakes(active) if wakes_per_day is None else wakes_per_day
        scaled = scale_to_zero_monthly(per_hour, wrapper.hourly, active, wakes, tail, days, warm_fraction)
        rows.append(Row(active, wakes, gpu_hours_per_day(active, wakes, tail), scaled, on, saving(scaled, on)))

    return Estimate(
        stack=stack,
        target=config.target,
        gpu_type=config.gpu.type,
        gpu_count=count,
        replicas=replicas,
        provider=provider if basis == "table" else basis,
        gpu_hourly=hourly_per_gpu,
        gpu_price_basis=basis,
        gpu_price_date=price.date,
        gpu_price_source=price.source,
        deployment_hourly=per_hour,
        wrapper_hourly=wrapper.hourly,
        wrapper_price_source=wrapper.source,
        idle_timeout_seconds=int(idle_timeout),
        idle_timeout_assumed=idle_assumed,
        cold_start_seconds=cold_start,
        node_release_seconds=node_release,
        wakes_per_day=wakes_per_day,
        days_per_month=days,
        always_on_monthly=on,
        break_even_active_hours_per_day=0.0 if warm_fraction >= 1 else break_even_hours(tail, wakes_per_day),
        max_containers=bounds.max_containers if bounds else None,
        worst_case_monthly=worst,
        request_timeout_seconds=bounds.request_timeout_seconds if bounds else None,
        rows=rows,
        notes=notes,
    )
