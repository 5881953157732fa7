"""``python -m dckd_basicsr.commands.demo``: the same as ``dckd-demo``."""
from dckd_basicsr.commands.demo import main

main()
