"""Applications built on the rest: the optimiser lab, the trust measurements, campaigns on a cluster.

They may import every layer below (adapters, reports, checking, io, engine, model);
only the command line imports them.
"""
