"""The frameworks: PyTorch, JAX (and their conformance rows), each loaded only when used.

Adapters import the engine, checking, io and reports; nothing below imports an adapter.
Public names: ``hessverify.torch``, ``hessverify.jax``, ``hessverify.tensorflow`` (aliases of the modules here).
"""
