"""The stream and freshness benchmarks' accounting: deliveries timed from the send, every
subscriber's events held against the trades acknowledged for its symbols, and the feed's refusals
read from the feeder's closing line and the API's request counter."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PrometheusCounter

from mdp.bench.freshness import feeder_stats, ingest_statuses, refusals_verdict
from mdp.bench.load import Deliveries
from mdp.bench.market import follow_sets
from mdp.bench.stream import Follower, tally
from mdp.feeder import FeedStats


def test_a_delivery_counts_from_its_send_and_an_event_never_sent_is_not_timed() -> None:
    deliveries = Deliveries()
    deliveries.sending(["a-1", "a-2"], at=10.0)
    deliveries.sending(["a-3"], at=10.5)
    deliveries.arrived("a-1", 10.25)
    deliveries.arrived("a-3", 10.5125)
    deliveries.arrived("a-2", 11.0)
    deliveries.arrived("someone-else-1", 10.3)
    assert deliveries.delivery_ms == pytest.approx([250.0, 12.5, 1000.0])
    assert deliveries.unsent == 1


def test_each_subscriber_is_held_to_every_acknowledged_trade_of_its_symbols_in_order() -> None:
    acked = Counter({"AAA": 3, "BBB": 2, "CCC": 1})
    right = Follower(frozenset({"AAA", "CCC"}))
    for symbol, seq in [("AAA", 1), ("AAA", 2), ("CCC", 4), ("AAA", 6)]:
        right.got(symbol, seq)
    missing = Follower(frozenset({"BBB"}))
    missing.got("BBB", 3)
    reordered = Follower(frozenset({"BBB"}))
    reordered.got("BBB", 5)
    reordered.got("BBB", 3)
    foreign = Follower(frozenset({"CCC"}))
    foreign.got("AAA", 1)
    everything = Follower(None)
    for seq in range(1, 7):
        everything.got("AAA", seq)
    repeated = Follower(frozenset({"CCC"}))
    repeated.got("CCC", 4)
    repeated.got("CCC", 4)

    found = tally([right, missing, reordered, foreign, everything, repeated], acked)

    assert found["events_expected"] == 4 + 2 + 2 + 1 + 6 + 1
    assert found["events_received"] == 4 + 1 + 2 + 1 + 6 + 2
    assert found["events_expected_per_subscriber"] == {"min": 1, "median": 2, "max": 6}
    assert found["subscribers_right"] == 2  # `right` and `everything`
    assert found["subscribers_wrong"] == 4
    assert found["subscribers_missing_events"] == 1
    assert found["subscribers_extra_events"] == 1
    assert found["subscribers_out_of_order"] == 2  # reordered, and a repeat
    assert found["subscribers_foreign_events"] == 1


def test_subscribers_follow_distinct_sets_of_one_or_two_market_symbols() -> None:
    market = [f"S{i}" for i in range(50)]
    sets = follow_sets(market, 300, 2)
    assert len(sets) == len(set(sets)) == 300
    assert all(1 <= len(s) <= 2 and s <= set(market) for s in sets)
    assert any(len(s) == 1 for s in sets)  # the Zipf law draws the first symbols often
    whole = follow_sets(market, 300, 2, whole=True)
    assert len(whole) == len(set(whole)) == 300
    assert all(len(s) == 2 and s <= set(market) for s in whole)


def test_the_feeders_closing_line_gives_its_acked_retried_and_rejected_ticks() -> None:
    stats = FeedStats(batches=3, ticks=150, duplicates=2, late=1, retries=4, rejected=50)
    stats.ack_ms.append(3.5)
    log = (
        "2026-12-07 18:00:00,000 INFO mdp.feed: feeding\n"
        f"2026-12-07 18:01:00,000 INFO mdp.feed: feeder done: {stats}\n"
    )
    assert feeder_stats(log) == {
        "batches": 3, "ticks": 150, "duplicates": 2, "late": 1, "retries": 4, "rejected": 50,
    }  # fmt: skip
    assert feeder_stats("2026-12-07 18:00:00,000 INFO mdp.feed: feeding\n") is None


def test_the_apis_answers_to_ingest_batches_are_counted_by_status() -> None:
    registry = CollectorRegistry()
    requests = PrometheusCounter(
        "mdp_http_requests", "HTTP requests", ["route", "method", "status"], registry=registry
    )
    requests.labels("/ingest/ticks", "POST", "202").inc(40)
    requests.labels("/ingest/ticks", "POST", "503").inc(3)
    requests.labels("/ingest/ticks", "POST", "429").inc(1)
    requests.labels("/ingest/tick", "POST", "503").inc(7)  # the probes' route
    requests.labels("/candles", "GET", "200").inc(9)
    assert ingest_statuses(generate_latest(registry).decode()) == {"202": 40, "429": 1, "503": 3}


@pytest.mark.parametrize(
    ("refused", "verdict"),
    [
        ({"feeder_retries": 0, "ingest_ticks_not_202": 0, "probes_refused": 0}, "none"),
        ({"feeder_retries": 2, "ingest_ticks_not_202": 2, "probes_refused": 0}, "the platform"),
        ({"feeder_retries": 0, "ingest_ticks_not_202": 0, "probes_refused": 1}, "the platform"),
        ({"feeder_retries": None, "ingest_ticks_not_202": 0, "probes_refused": 0}, "unknown"),
    ],
)
def test_a_run_with_refusals_says_so(refused: dict[str, int | None], verdict: str) -> None:
    assert refusals_verdict(refused).startswith(verdict)
