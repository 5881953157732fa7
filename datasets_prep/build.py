"""Building the outputs that are missing: a process pool decodes each input image once and returns PNG bytes for every
output that needs them; the main process streams them into the outputs' temporary paths and moves them into place.
An interrupted or failed build leaves no output that looks complete, and never a half-overwritten one."""
import multiprocessing
import os
from functools import partial
from os import path as osp
from typing import Callable, List, Optional, Sequence

from tqdm import tqdm

from datasets_prep.outputs import Output


def _missing_ancestor(folder: str) -> Optional[str]:
    """The highest folder on the way to ``folder`` that does not exist yet (None if ``folder`` exists)."""
    top = None
    while folder and not osp.exists(folder):
        top, folder = folder, osp.dirname(folder)
    return top


def _remove_created_folders(outputs: Sequence[Output], created: Sequence[str]) -> None:
    """After a failed build, remove the (now empty) parent folders that the build created."""
    for output in outputs:
        folder = osp.dirname(output.path)
        while any(folder == top or folder.startswith(top + os.sep) for top in created):
            try:
                os.rmdir(folder)
            except OSError:  # not empty: something else lives there
                break
            folder = osp.dirname(folder)


def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)  # one process per core; imresize would otherwise oversubscribe


def build_outputs(outputs: Sequence[Output], items: Sequence, worker: Callable, workers: int, overwrite: bool,
                  desc: str) -> List[Output]:
    """Build the outputs that are missing (or all with ``overwrite``); returns those built.

    ``worker(item, needed=frozenset_of_output_paths)`` must return ``{output_path: [Record, ...]}`` for the outputs
    in ``needed``. Items are processed in a pool of ``workers`` processes (in this process if ``workers <= 1``).
    """
    todo = [output for output in outputs if output.needs_build(overwrite)]
    if not todo:
        return []
    by_path = {output.path: output for output in todo}
    func = partial(worker, needed=frozenset(by_path))
    created = [top for top in {_missing_ancestor(osp.dirname(output.path)) for output in todo} if top]
    pool = None
    try:
        for output in todo:
            output.open()
        if workers > 1 and len(items) > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context('fork' if 'fork' in methods else None)
            pool = context.Pool(min(workers, len(items)), initializer=_init_worker)
            results = pool.imap(func, items)
        else:
            results = map(func, items)
        for result in tqdm(results, total=len(items), desc=desc, unit='image', dynamic_ncols=True,
                           disable=None):  # no bar when stderr is not a terminal (redirected to a file)
            for path, records in result.items():
                for record in records:
                    by_path[path].put(*record)
        for output in todo:
            output.commit()
    except BaseException:
        for output in todo:
            output.abort()
        _remove_created_folders(todo, created)
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return todo
