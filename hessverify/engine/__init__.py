"""The engine: a problem's verification computed once.

The point (forward pass, magnitudes, rounding bound, kinks, well-posedness),
result forms, bounds and budgets, the registry of components, comparisons and
the run.  It imports the model and the base layer.  Methods and references sit
*above* it: they build on its types and are found by the registry when first
asked for (:mod:`.registry`), so the engine never imports one by name.
"""
