"""Checking a user's curvature code: ``check()``, the sweep, Hypothesis strategies, the sandbox.

It imports the engine, io and the model; the reports import it, never the reverse.
"""
