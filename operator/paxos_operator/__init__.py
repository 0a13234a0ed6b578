"""The PaxosCluster Kubernetes operator (issue 5).

This package is deliberately not named ``operator``: a top-level package of
that name would shadow Python's standard library module.
"""
