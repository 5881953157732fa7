"""Plugin models: every `*_model.py` module here is imported by `dckd_basicsr` and registers itself in BasicSR."""
