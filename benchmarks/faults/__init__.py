"""Fault-injection sweep of the ``driftar`` CLI (entry point: ``benchmarks/faults.py``).

``cases``: the attempts, as data (``Attempt(name, category, setup, argv, expect, ...)``).
``classify``: the one function that turns an attempt's outcome into a class, plus its pure helpers.
``runner``: runs attempts in fresh temp directories (sentinels, leftovers, next start), reports.
"""
