"""Every way to start BasicSR's training and test pipelines with the plugin, and what makes each run the same code.

* ``dckd-train`` / ``python -m dckd_basicsr.train`` / ``python dckd_basicsr/train.py`` (and the ``test`` ones) call
  :func:`run_pipeline`.
* ``python -m basicsr.train`` / ``python -m basicsr.test``: runpy would execute a fresh copy of BasicSR's script as
  ``__main__``; :class:`PipelineMainLoader` (installed by
  :func:`dckd_basicsr.integration.patches.patch_module_entry_points`) makes it run :func:`run_pipeline` instead.
* A BasicSR clone's ``python basicsr/train.py``: the script itself is ``__main__``; :func:`adopt_script_functions`
  (called by the patched ``parse_options``) swaps in the patched functions it defines itself.

All of them then go through the patched ``parse_options`` (:mod:`dckd_basicsr.integration.run_options`), which reads
the command line (:mod:`dckd_basicsr.integration.command_line`).
"""
import importlib
import os
import sys
from typing import Optional

from dckd_basicsr.errors import report_option_errors
from dckd_basicsr.integration.command_line import set_prog


def run_pipeline(module_name: str, pipeline: str, prog: Optional[str] = None) -> None:
    """Run ``<module_name>.<pipeline>`` (e.g. ``basicsr.train.train_pipeline``) with the plugin registered.

    Run folders go under the working directory (or ``path.experiments_root`` / ``path.results_root``); mistakes in
    the option file are printed as one message, ``<prog>: error: ...`` (``prog`` defaults to ``module_name``), and
    exit with status 2.
    """
    import dckd_basicsr  # noqa: F401  (registers the plugin and applies the BasicSR patches)
    prog = prog or module_name
    set_prog(prog)
    function = getattr(importlib.import_module(module_name), pipeline)
    with report_option_errors(prog=prog):
        function(os.getcwd())


class PipelineMainLoader:
    """Stands in for the loader of ``basicsr.train`` / ``basicsr.test`` when runpy asks it for ``__main__`` code."""

    def __init__(self, loader, module_name: str, pipeline: str):
        self._loader = loader
        self._module_name = module_name
        self._pipeline = pipeline

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def get_code(self, fullname):
        if fullname != self._module_name:
            return self._loader.get_code(fullname)
        source = (f'from dckd_basicsr.integration.entry_points import run_pipeline\n'
                  f'if __name__ == "__main__":\n'
                  f'    run_pipeline({self._module_name!r}, {self._pipeline!r})\n')
        return compile(source, f'<dckd_basicsr: python -m {self._module_name}>', 'exec')


# Functions BasicSR's train.py defines itself (the rest it imports, so it gets the patched ones) and that
# train_pipeline looks up as module globals at call time.
SCRIPT_FUNCTIONS = ('load_resume_state', 'create_train_val_dataloader')


def adopt_script_functions() -> None:
    """Point a BasicSR clone's ``python basicsr/train.py`` at the patched functions.

    That file then runs as ``__main__`` with its own copies of :data:`SCRIPT_FUNCTIONS` (BasicSR's CUDA-only resume,
    the data position lost on resume), which no patch of ``basicsr.train`` reaches, and they are defined only after
    its imports (when the plugin is applied). ``parse_options`` is the first call of ``train_pipeline``, by which time
    they exist: the patched ``parse_options`` calls this, which replaces them in ``__main__`` with those of the patched
    ``basicsr.train``. Anything else (a ``__main__`` without BasicSR's ``train_pipeline`` / ``load_resume_state``) is
    left alone.
    """
    import basicsr.train
    main = sys.modules.get('__main__')
    if main is None or main is basicsr.train:
        return
    names = vars(main)
    if not callable(names.get('train_pipeline')) or not callable(names.get('load_resume_state')):
        return
    for name in SCRIPT_FUNCTIONS:
        own = names.get(name)
        if callable(own) and getattr(own, '__module__', None) == '__main__':
            setattr(main, name, getattr(basicsr.train, name))
