"""Pure logic of the pre-parse defence (gateway.security.flood): fake clock, Hypothesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.security.flood import Ban, BanList, BanReason, Budget, ScannerMatcher, SourceBudgets

PIKE = Budget(16, 2.0)


def budgets(trusted: frozenset[str] = frozenset(), max_sources: int = 100_000) -> SourceBudgets:
    return SourceBudgets(lambda host: None if host in trusted else PIKE, max_sources=max_sources)


def test_a_burst_of_the_budget_passes_and_the_next_message_does_not() -> None:
    b = budgets()
    assert all(b.charge("192.0.2.1", 100.0) for _ in range(16))
    assert not b.charge("192.0.2.1", 100.0)
    assert b.charge("192.0.2.2", 100.0)  # another source has its own budget


def test_the_budget_refills_over_the_window() -> None:
    b = budgets()
    for _ in range(16):
        b.charge("192.0.2.1", 0.0)
    assert not b.charge("192.0.2.1", 0.0)
    assert b.charge("192.0.2.1", 0.125)  # 8 tokens a second: one is back after 1/8 s
    assert not b.charge("192.0.2.1", 0.125)
    assert all(b.charge("192.0.2.1", 10.0) for _ in range(16))  # full again, never more


def test_trusted_sources_have_no_limit() -> None:
    b = budgets(frozenset({"198.51.100.7"}))
    assert all(b.charge("198.51.100.7", 0.0) for _ in range(10_000))


def test_the_table_is_bounded_under_a_spoofed_source_flood() -> None:
    b = budgets(max_sources=1000)
    for i in range(50_000):
        b.charge(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", i * 0.0001)
        assert len(b) <= 1000


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=0.5, allow_nan=False), min_size=1, max_size=300),
       st.integers(min_value=1, max_value=50), st.floats(min_value=0.1, max_value=10.0))
def test_no_span_of_time_lets_more_than_the_budget_through(
    gaps: list[float], requests: int, window: float
) -> None:
    """Over any span of t seconds at most requests * (1 + t / window) messages pass."""
    b = SourceBudgets(lambda _host: Budget(requests, window))
    now, passed = 0.0, []
    for gap in gaps:
        now += gap
        if b.charge("203.0.113.9", now):
            passed.append(now)
    for i, start in enumerate(passed):
        for j in range(i, len(passed)):
            span = passed[j] - start
            assert j - i + 1 <= requests * (1 + span / window) + 1e-6


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=50), st.floats(min_value=0.1, max_value=10.0),
       st.integers(min_value=1, max_value=400))
def test_a_sender_within_the_budget_is_never_refused(requests: int, window: float, count: int) -> None:
    """Steadily at the refill rate (or slower), every message passes."""
    b = SourceBudgets(lambda _host: Budget(requests, window))
    interval = window / requests
    assert all(b.charge("203.0.113.9", k * interval * 1.000001) for k in range(count))


def test_a_ban_holds_until_it_expires_and_a_shorter_one_never_shortens_it() -> None:
    bans = BanList()
    bans.add(Ban("192.0.2.1", 300.0, BanReason.FLOOD, "guard", 0.0))
    bans.add(Ban("192.0.2.1", 100.0, BanReason.OPERATOR, "ops", 0.0))
    assert bans.banned("192.0.2.1", 299.9)
    assert not bans.banned("192.0.2.2", 0.0)
    assert not bans.banned("192.0.2.1", 300.0)
    assert bans.active(300.0) == [] and len(bans) == 0


def test_lift_and_replace() -> None:
    bans = BanList()
    bans.add(Ban("192.0.2.1", 300.0, BanReason.FLOOD, "guard", 0.0))
    assert bans.lift("192.0.2.1") is not None and not bans.banned("192.0.2.1", 1.0)
    assert bans.lift("192.0.2.1") is None
    bans.replace([Ban("2001:db8::1", 50.0, BanReason.SCANNER, "guard", 0.0)])
    assert bans.banned("2001:db8::1", 1.0)
    assert [b.host for b in bans.active(1.0)] == ["2001:db8::1"]


def test_scanner_user_agents_are_found_in_raw_bytes_case_insensitively() -> None:
    matcher = ScannerMatcher(["friendly-scanner", "sipvicious", "VaxSIPUserAgent"])
    head = b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9\r\n"
    assert matcher.search(head + b"User-Agent: friendly-scanner\r\n\r\n")
    assert matcher.search(head + b"user-agent:VaxSIPUserAgent/3.1\r\n\r\n")
    assert matcher.search(head + b"USER-AGENT : SIPVicious 0.3\r\n\r\n")
    # Only the User-Agent field counts: a display name or a body mentioning a tool does not.
    assert not matcher.search(head + b'From: "sipvicious" <sip:1@x>\r\nUser-Agent: Yealink\r\n\r\n')
    assert not matcher.search(head + b"User-Agent: baresip\r\n\r\nfriendly-scanner")
    assert not ScannerMatcher([]) and not ScannerMatcher([]).search(head + b"User-Agent: sipcli\r\n\r\n")
