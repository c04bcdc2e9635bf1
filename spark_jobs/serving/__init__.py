"""Serving: the online store the decision API reads (Redis, fed from gold's Change Data Feed)."""
