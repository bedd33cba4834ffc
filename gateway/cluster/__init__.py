"""What the gateway's workers and nodes share to act as one: leases for once-per-cluster roles."""
