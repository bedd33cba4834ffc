"""The operations side of the edge agents: signing what is pushed to sites (``gateway ctl edge``)
and, when the ``edge:`` section is configured, following what sites report."""
