"""The base layer: floating-point formats (:mod:`.precision`) and type aliases (:mod:`.typing`).

It imports nothing of hessverify but :mod:`hessverify.errors`; everything else may import it.
"""
