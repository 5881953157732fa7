"""The model's own random stream, so that a resumed run draws what an uninterrupted one would.

Everything random in a training step (DCKD's negatives, label-consistency masks, DUKD's zoom-in cells) is drawn from
the global torch generators while :meth:`RandomStreams.model_random_stream` has swapped them for the model's own
stream, seeded from ``manual_seed`` (and the rank); the global stream the data pipeline uses is left untouched. The
stream of every rank and the Python/NumPy global states (crops and flips drawn in the main process) go into the
training state (:mod:`dckd_basicsr.training.resume`) and come back on resume. Validation leaves every global state as it
found it, so it cannot shift the training data.
"""
import contextlib
import random
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from basicsr.utils.dist_util import get_dist_info
from torch import Tensor

# Seeds of the ranks' streams are this far apart.
RANK_SEED_STRIDE = 100003


def stream_for(device: torch.device, seed: int) -> Dict[str, Optional[Tensor]]:
    """A fresh random stream: the CPU generator state and, on CUDA, the device's."""
    state = {'torch': torch.Generator().manual_seed(seed).get_state(), 'cuda': None}
    if device.type == 'cuda':
        state['cuda'] = torch.Generator(device=device).manual_seed(seed).get_state()
    return state


def host_random_state() -> Dict[str, Any]:
    """Python and NumPy global states (data augmentation in the main process), as weights-only-loadable values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {'python': random.getstate(),
            'numpy': (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}


def set_host_random_state(state: Dict[str, Any]) -> None:
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


class RandomStreams:
    """Mixin for a BasicSR model: ``self.step_rng``, the stream its training step runs on."""

    def init_random_stream(self) -> None:
        seed = int(self.opt.get('manual_seed') or 0) + RANK_SEED_STRIDE * get_dist_info()[0]
        self.step_rng = stream_for(self.device, seed)

    def cuda_devices(self) -> List[int]:
        if self.device.type != 'cuda':
            return []
        return [self.device.index if self.device.index is not None else torch.cuda.current_device()]

    @contextlib.contextmanager
    def model_random_stream(self) -> Iterator[None]:
        """Run the block on the model's own torch stream; the global one (data loading's) is left untouched."""
        devices = self.cuda_devices()
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.step_rng['torch'])
            if self.step_rng['cuda'] is not None:
                torch.cuda.set_rng_state(self.step_rng['cuda'], devices[0])
            try:
                yield
            finally:
                self.step_rng['torch'] = torch.get_rng_state()
                if self.step_rng['cuda'] is not None:
                    self.step_rng['cuda'] = torch.cuda.get_rng_state(devices[0])

    def random_state(self) -> Dict[str, Any]:
        """This rank's random state: the model's step stream and the Python/NumPy global states."""
        return {'step': {key: (None if value is None else value.clone()) for key, value in self.step_rng.items()},
                **host_random_state()}

    def set_random_state(self, state: Dict[str, Any]) -> None:
        self.step_rng = {key: (None if value is None else value.clone()) for key, value in state['step'].items()}
        if self.device.type == 'cuda' and self.step_rng.get('cuda') is None:
            self.step_rng['cuda'] = stream_for(self.device, int(self.opt.get('manual_seed') or 0))['cuda']
        set_host_random_state(state)

    def all_ranks_random_state(self) -> List[Dict[str, Any]]:
        """:meth:`random_state` of every rank (gathered under DDP), for the training state."""
        state = self.random_state()
        if not self.opt.get('dist'):
            return [state]
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, state)
        return gathered

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """BasicSR's validation, leaving every global random state as it was (so it cannot shift training data)."""
        host = host_random_state()
        with torch.random.fork_rng(devices=self.cuda_devices()):
            super().validation(dataloader, current_iter, tb_logger, save_img)
        set_host_random_state(host)
