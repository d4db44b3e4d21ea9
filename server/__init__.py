"""The lakehook webhook server: fast authenticated intake, durable jobs, workers, reconciler."""
