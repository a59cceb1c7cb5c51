"""The auditchain benchmark kit: each hot path measured beside its physical reference."""
