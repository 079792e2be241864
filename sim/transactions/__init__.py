"""Distributed transactions: two-phase and three-phase commit."""
