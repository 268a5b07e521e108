"""Fault-injection sweep of the ``driftar`` CLI (entry point: ``benchmarks/faults.py``).

``cases``: the attempt data model, setup helpers and ``all_cases()``; the attempts themselves are in
``cases_commands`` (bad values of every numeric option of each command) and ``cases_artifacts``
(damaged model directories, runs and export bundles; kills; concurrent writers).
``classify``: the one function that turns an attempt's outcome into a class, plus its pure helpers.
``runner``: runs attempts in fresh temp directories (sentinels, leftovers, next start), reports.
"""
