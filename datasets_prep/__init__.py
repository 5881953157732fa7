"""Scripts that turn downloaded datasets into the layouts the option files expect (see ``datasets_prep/README.md``).

Each ``prepare_*.py`` runs as ``python datasets_prep/<script>.py ...`` from the repository root and exposes
``main(argv=None)`` for the demo and the tests. The shared machinery is in :mod:`datasets_prep.common`.
"""
