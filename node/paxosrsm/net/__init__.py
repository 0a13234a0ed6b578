"""The networked node: wire codec, authentication, asyncio runtime, HTTP API.

Thin layers around the sans-I/O core (``paxosrsm.node``): they move bytes,
fsync records and keep time; every protocol decision stays in the core.
"""
