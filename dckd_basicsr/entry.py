"""Shared body of every training and testing entry point: BasicSR's own pipelines, rooted at the working directory."""
import importlib
import os

from dckd_basicsr.errors import report_option_errors


def run_pipeline(module_name: str, pipeline: str) -> None:
    """Run ``<module_name>.<pipeline>`` (e.g. ``basicsr.train.train_pipeline``) with the plugin registered.

    Run folders go under the working directory (or ``path.experiments_root`` / ``path.results_root``); mistakes in
    the option file are printed as one message and exit with status 2.
    """
    import dckd_basicsr  # noqa: F401  (registers the plugin and applies the BasicSR patches)
    function = getattr(importlib.import_module(module_name), pipeline)
    with report_option_errors(prog=module_name):
        function(os.getcwd())
