"""Trunks, the registrar (RFC 3261 §10), the location store, outbound registration and qualify.

* :mod:`.trunks` — the trunk file (``config/trunks.yaml``, named by ``registrar.trunks``):
  registering devices, static peers, carrier trunks; compiled into a ``TrunkTable`` (lookup by
  username, by number, by source address). Policy data, separate from ``gateway.yaml`` so it can
  be reloaded on its own (:mod:`.holder`: swapped whole on SIGHUP and by the operations API).
* :mod:`.settings` — the ``registrar`` section of ``gateway.yaml``.
* :mod:`.registrar` — ``Registrar.handle(request, source)``: REGISTER with Digest auth (the maths
  is sans-I/O in :mod:`gateway.sip.auth`).
* :mod:`.location` — ``LocationStore`` with ``memory`` and ``redis`` plug-ins.
* :mod:`.outbound` — client registration at carriers; :mod:`.qualify` — OPTIONS with hysteresis.
* :mod:`.service` — ``install(gateway, settings, trunks=...)``: the wiring, called by :mod:`gateway.node`.

Clocks: bindings and nonces are shared between gateway processes (Redis) and survive restarts,
so they carry wall-clock time (injected as ``clock``; tests pass a fake one). Protocol timers
(back-off, qualify intervals, transactions) use the event loop's monotonic clock.
"""
