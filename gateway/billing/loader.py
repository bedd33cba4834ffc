"""The billing consumer's SQL output: each batch of stream entries becomes one database commit.

``StoreOutput`` plugs into :class:`gateway.charging.consumer.BillingConsumer` as an idempotent
output: rows are buffered by ``write`` and inserted and committed by ``flush``, which the
consumer calls before it acknowledges the batch (``XACK`` after the commit, never before).
"""

from __future__ import annotations

from gateway.billing.store import BillingStore, Row, StoreError, event_row
from gateway.charging.consumer import OutputError
from gateway.charging.events import ChargingEvent


class StoreOutput:
    """Charging events into the billing store; duplicates are absorbed by its primary key."""

    idempotent = True

    def __init__(self, store: BillingStore) -> None:
        self.store = store
        self.inserted = 0
        self._rows: list[Row] = []

    def write(self, event: ChargingEvent, raw: bytes) -> None:
        self._rows.append(event_row(event, raw))

    def flush(self) -> None:
        rows, self._rows = self._rows, []  # a failed batch is re-read from the stream, not kept
        try:
            self.inserted += self.store.write(rows)
        except StoreError as exc:
            raise OutputError(str(exc)) from exc
