"""The user commands: ``dckd-infer``, ``dckd-export``, ``dckd-profile``, ``dckd-convert``, ``dckd-demo``,
``dckd-results``. No other module imports them."""
