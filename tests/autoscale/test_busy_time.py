"""Demand that the point-in-time gauge misses: clients sending short requests in lock step finish
together in one engine step, so ``vllm:num_requests_running`` (set at vLLM's last step) is often
caught at 0 between batches. The autoscaler also reads, by Little's law, the mean number in flight
between two scrapes from vLLM's ``vllm:e2e_request_latency_seconds`` histogram
(vllm/v1/metrics/loggers.py: arrival-to-last-token seconds per finished request), capped at the
requests that finished in the interval plus those still running, and takes the larger of that and
the gauge."""

from __future__ import annotations

from tests.autoscale.metrics_replica import MetricsReplica
from tests.scaling.fake_apiserver import FakeAPIServer
from tests.scaling.fakes import FakeClock
from wrapper.routing.backends import Backend, Pool, name_of
from wrapper.routing.policy import make_policy
from wrapper.routing.router import Router
from wrapper.scaling.autoscale import Autoscaler, BusyTime, parse_latency
from wrapper.scaling.autoscale_policy import AutoscalePolicy, Kind
from wrapper.scaling.kube import StatefulSetClient
from wrapper.scaling.policy import ANNOTATION

NS, NAME = "vllm-dev", "vllm"


def test_the_latency_histograms_sum_and_count_are_read_from_vllms_exposition_format() -> None:
    page = (
        "# TYPE vllm:e2e_request_latency_seconds histogram\n"
        'vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="tiny"} 4.0\n'
        'vllm:e2e_request_latency_seconds_count{engine="0",model_name="tiny"} 9.0\n'
        'vllm:e2e_request_latency_seconds_sum{engine="0",model_name="tiny"} 12.5\n'
        'vllm:e2e_request_latency_seconds_count{engine="1",model_name="tiny"} 1.0\n'
        'vllm:e2e_request_latency_seconds_sum{engine="1",model_name="tiny"} 0.5\n'
    )
    assert parse_latency(page) == (13.0, 10.0)
    assert parse_latency('vllm:num_requests_running{engine="0"} 1.0\n') is None
    assert parse_latency('vllm:e2e_request_latency_seconds_sum{engine="0"} 1.0\n') is None  # no count


def test_busy_time_is_the_mean_in_flight_between_two_scrapes_and_forgets_a_restart() -> None:
    busy = BusyTime()
    assert busy.update("pod-0", 10.0, (100.0, 50), 0) is None  # nothing to compare with yet
    assert busy.update("pod-0", 12.0, (112.0, 74), 0) == 6.0  # 12 request-seconds in 2 s: 6 in flight on average
    assert busy.update("pod-0", 14.0, (3.0, 2), 0) is None  # the counters went back: vLLM restarted
    assert busy.update("pod-0", 15.0, (7.0, 10), 0) == 4.0
    assert busy.update("pod-1", 15.0, None, 0) is None  # not vLLM's page, or no histogram


def test_a_long_request_that_ends_counts_as_one_not_as_its_length_over_the_interval() -> None:
    busy = BusyTime()
    busy.update("pod-0", 10.0, (0.0, 0), 1)
    assert busy.update("pod-0", 11.0, (60.0, 1), 0) == 1.0  # one 60 s request ended in this 1 s
    assert busy.update("pod-0", 12.0, (180.0, 4), 2) == 5.0  # three ended, two still run: five at most


async def lock_step_load(with_counter: bool) -> tuple[list, int]:
    """Pod 0 alone, every scrape landing between two batches (the gauge reads 0) while 10
    request-seconds finish per second; four 1 s ticks. The actions taken and the replicas after."""
    server = FakeAPIServer(NS, NAME, replicas=1, ready=1).start()
    pod = MetricsReplica()
    others = [MetricsReplica() for _ in range(2)]  # pods 1 and 2: not created
    clock = FakeClock()
    bases = [r.base_url for r in (pod, *others)]
    router = Router(Pool([Backend(name_of(b), b) for b in bases]), make_policy("least-load"))
    policy = AutoscalePolicy(1, 3, 4.0, window=2.0, scale_down_delay=60.0, clock=clock)
    scaler = Autoscaler(StatefulSetClient(NS, NAME, ANNOTATION, api_url=server.url), policy, router, bases, tick=1.0)
    try:
        await pod.start()
        pod.running = pod.waiting = 0
        pod.latency_sum = 0.0 if with_counter else None
        actions = [await scaler.tick()]  # the first scrape: no interval yet
        for _ in range(4):
            clock.advance(1.0)
            if with_counter:  # 20 half-second requests finish each second: 10 in flight on average
                pod.latency_sum = (pod.latency_sum or 0.0) + 10.0
                pod.finished += 20
            actions.append(await scaler.tick())
        return [a for a in actions if a is not None], server.replicas
    finally:
        await scaler.stop()
        await pod.stop()
        server.stop()


async def test_short_requests_in_lock_step_scale_up_though_the_gauge_reads_zero() -> None:
    ups, replicas = await lock_step_load(with_counter=True)
    assert [(a.kind, a.to) for a in ups] == [(Kind.UP, 3)]  # ceil(10 / 4) = 3, sustained for the window
    assert replicas == 3
    assert "10.00 in flight per ready replica" in ups[0].reason


async def test_the_gauge_alone_would_have_seen_no_demand() -> None:
    assert await lock_step_load(with_counter=False) == ([], 1)
