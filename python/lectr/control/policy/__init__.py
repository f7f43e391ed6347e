"""The policy engine: budgets, rate limits and latency targets, with in-process
or Redis counters."""
