"""MissBudget, the token buckets that ration reloads caused by unknown names, against brute-force
checks over random sequences of requests: never more than burst + rate x window in any window,
always one once a reload's worth of time has passed, keys independent."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from potluck.serving._miss_budget import MissBudget

BURST = 3
RATE = 2.0  # reloads per second


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# (milliseconds since the previous request, key)
REQUESTS = st.lists(
    st.tuples(st.integers(0, 1_500), st.sampled_from(["a", "b", None])), max_size=80
)


def _run(requests: list[tuple[int, str | None]]) -> list[tuple[float, str | None, bool]]:
    clock = Clock()
    budget = MissBudget(burst=BURST, per_second=RATE, clock=clock)
    out = []
    for gap_ms, key in requests:
        clock.now += gap_ms / 1_000
        out.append((clock.now, key, budget.take(key)))
    return out


@settings(max_examples=300)
@given(REQUESTS)
def test_no_window_allows_more_than_burst_plus_rate(requests: list[tuple[int, str | None]]) -> None:
    taken = _run(requests)
    for key in {k for _, k, _ in taken}:
        times = [t for t, k, allowed in taken if k == key and allowed]
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                assert j - i + 1 <= BURST + RATE * (times[j] - start) + 1e-9


@settings(max_examples=300)
@given(REQUESTS)
def test_a_reload_is_allowed_once_its_time_has_come(requests: list[tuple[int, str | None]]) -> None:
    last_allowed: dict[str | None, float] = {}
    for now, key, allowed in _run(requests):
        if key not in last_allowed or now - last_allowed[key] >= 1 / RATE + 1e-6:
            assert allowed, (now, key)
        if allowed:
            last_allowed[key] = now


@settings(max_examples=200)
@given(REQUESTS)
def test_keys_do_not_share_a_budget(requests: list[tuple[int, str | None]]) -> None:
    together = _run(requests)
    for key in {k for _, k in requests}:
        alone: list[tuple[int, str | None]] = []
        gap = 0
        for gap_ms, k in requests:
            gap += gap_ms
            if k == key:
                alone.append((gap, k))
                gap = 0
        assert [a for _, k, a in together if k == key] == [a for _, _, a in _run(alone)]


def test_burst_then_rate_and_forgotten_keys_start_full() -> None:
    clock = Clock()
    budget = MissBudget(burst=BURST, per_second=RATE, clock=clock)
    assert [budget.take("a") for _ in range(BURST + 1)] == [True] * BURST + [False]
    clock.now += 0.499
    assert budget.take("a") is False
    clock.now += 0.001
    assert budget.take("a") is True
    budget.keep_only({"b"})
    assert [budget.take("a") for _ in range(BURST)] == [True] * BURST
