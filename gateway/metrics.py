"""The gateway's counters, on a prometheus-client registry the operations API will expose.

Each :class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry` (not the
process-global default), so several gateways can live in one process (tests) without clashing.
Label values are small closed sets chosen in code (``reason``, ``transport``, ``kind``), never
values taken from a message, so a hostile peer cannot blow up the number of time series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class DropReason:
    """``reason`` label values of ``sip_messages_dropped_total`` (why a message got no answer)."""

    UNPARSEABLE = "unparseable"  # not SIP, or too broken to address an answer to
    INVALID_RESPONSE = "invalid_response"  # a malformed response: never answered (RFC 4475 §3.1.2.5)
    STRAY_RESPONSE = "stray_response"  # a response matching no client transaction
    TRANSACTION_MISMATCH = "transaction_mismatch"  # input its transaction has no transition for
    TOO_LARGE = "too_large"  # over the configured message size, and not answerable
    FRAMING = "framing"  # a stream lost its framing (the connection is closed)
    UNROUTABLE = "unroutable"  # an answer whose destination cannot be reached or resolved
    INTERNAL_ERROR = "internal_error"  # our own bug, logged with its traceback


class Metrics:
    """Counters for the SIP transports and the request pipeline."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.messages_received = Counter(
            "sip_messages_received",
            "SIP messages received, by transport and kind (request / response / keepalive).",
            ["transport", "kind"],
            registry=self.registry,
        )
        self.messages_dropped = Counter(
            "sip_messages_dropped",
            "SIP messages dropped without an answer, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.stateless_responses = Counter(
            "sip_stateless_responses",
            "Error responses sent statelessly to malformed or unacceptable requests, by status.",
            ["status"],
            registry=self.registry,
        )
        self.transport_errors = Counter(
            "sip_transport_errors",
            "Send or receive errors reported by the sockets, by transport.",
            ["transport"],
            registry=self.registry,
        )
        self.tcp_connections = Gauge(
            "sip_tcp_connections", "Open SIP TCP connections.", registry=self.registry
        )
        self.tcp_connections_closed = Counter(
            "sip_tcp_connections_closed",
            "SIP TCP connections closed, by reason (peer, idle, framing, error, shutdown).",
            ["reason"],
            registry=self.registry,
        )

        self.overload_refusals = Counter(
            "sip_overload_refusals",
            "Requests answered 503 because a resource cap was reached, by resource "
            "(server_transactions, dialogs).",
            ["resource"],
            registry=self.registry,
        )
        self.spend_alarms = Counter(
            "call_spend_alarms",
            "Spend-velocity alarms raised (toll-fraud guard), by scope kind (line or group).",
            ["kind"],
            registry=self.registry,
        )
        self.limit_refusals = Counter(
            "call_limit_refusals",
            "Calls refused because a concurrent-call or calls-per-second limit was reached, by the "
            "configured scope (trunk:NAME or group:NAME).",
            ["scope"],
            registry=self.registry,
        )
        self.worker_handoffs = Counter(
            "sip_worker_handoffs",
            "UDP datagrams handed between worker processes (sent to their owner, received from "
            "another worker, failed: the owner's channel was full), see gateway.transport.handoff.",
            ["direction"],
            registry=self.registry,
        )

    def dropped(self, reason: str) -> None:
        """Count one message dropped for ``reason`` (a :class:`DropReason` value)."""
        self.messages_dropped.labels(reason).inc()

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a sample (e.g. ``sip_messages_dropped_total``); 0 when never set."""
        found = self.registry.get_sample_value(name, labels or {})
        return 0.0 if found is None else found
