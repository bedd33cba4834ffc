"""Charging: the per-call charging events (CDRs), their rating, and the sinks that deliver them.

- ``events``: the event model (schema version, JSON Schema published in ``schemas/``).
- ``rating``: tariff tables from YAML; amounts in integer fen.
- ``recorder``: the pure per-call state machine (attempt → ring → answer → interim → stop).
- ``sinks`` / ``spool``: delivery, at least once, with stable event ids for de-duplication.
- ``service``: what call control drives: one ``ChargedCall`` per call attempt.
- ``settings``: the ``charging`` section of ``config/gateway.yaml``.
- ``consumer`` / ``cli``: the reference billing consumer (``gateway billing consume``).
"""
