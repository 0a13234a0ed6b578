"""Shared test harnesses (the Jepsen-style test on real processes)."""
