"""Plugin archs: every `*_arch.py` module here is imported by `dckd_basicsr` and registers itself in BasicSR."""
