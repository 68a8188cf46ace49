"""Fallback routing: decision table, health board, rate limiter, metrics, router, routing strategies."""
