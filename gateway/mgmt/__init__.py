"""Operations: the HTTP API, its OpenAPI document, the web console and ``gateway ctl``.

* :mod:`.settings` — the ``api`` config section (listen address, tokens, audit);
* :mod:`.auth` — bearer tokens and roles (constant-time comparison);
* :mod:`.audit` — the audit trail (JSON lines under ``state_dir``, a Redis stream when configured);
* :mod:`.dialplans` — versioned dialplans: validate, explain, replace (atomic swap), roll back;
* :mod:`.monitor` — event-loop lag, call counters and the rates the console charts;
* :mod:`.openapi` — the OpenAPI 3.1 document, written as data;
* :mod:`.api` — the aiohttp application factory and its handlers;
* :mod:`.cli` — ``gateway ctl``, the API for scripts.

This package is imported by :mod:`gateway.config` (for its settings model): keep this module
free of imports.
"""
