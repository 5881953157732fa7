"""The BasicSR integration: the patches to BasicSR 1.4.2, the entry points, the pre-run option pipeline and its
checks (preflight, smoke runs). Imported by ``dckd_basicsr/__init__.py`` and the commands only."""
