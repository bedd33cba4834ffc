"""Account states (normal, arrears 欠费, suspended 停机, pre-cancelled 预销号, cancelled 销号).

- ``policy``: the states, the configurable policy table and the pure checks
  (``AccountPolicy.check_call`` / ``check_registration`` → ``Refusal | None``).
- ``store``: where states live (in memory by default, Redis when configured), per number and
  per group; ``AccountGate`` combines a store with the policy for call control and the registrar.
- ``cli``: ``gateway account set|get``.
"""
