"""Edge security: flood and scanner defence before parsing, bans shared by every worker,
authentication-failure bans and user lockouts (issue 16).

* :mod:`gateway.security.flood` — pure logic: per-source budgets, the local ban list, the
  scanner User-Agent search (fed bytes and ``now``, no I/O).
* :mod:`gateway.security.bans` — the ban store shared by the workers (memory, Redis).
* :mod:`gateway.security.guard` — the adapter the transports call on every datagram and
  connection, and the :class:`~gateway.security.auth_events.AuthFailureObserver` of the digest code.
* :mod:`gateway.security.settings` — the ``security:`` section of ``config/gateway.yaml``.
"""
