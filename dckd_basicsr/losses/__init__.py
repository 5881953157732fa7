"""Plugin losses: every `*_loss.py` module here is imported by `dckd_basicsr` and registers itself in BasicSR."""
