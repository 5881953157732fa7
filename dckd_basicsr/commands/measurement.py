"""Parameters, FLOPs, CPU latency and peak memory of one network at one input size, measured in this process or in a
fresh one (``python -m dckd_basicsr.commands.measurement``, reading the request as JSON on stdin); what each number
means is in :mod:`dckd_basicsr.commands.profile`."""
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

from dckd_basicsr.errors import OptionError

RESULT_MARK = 'DCKD_PROFILE_RESULT '


@dataclass
class Measurement:
    """What :func:`measure` reports for one network at one input size."""
    params: int
    flops: int
    latency_ms: Optional[float]
    peak_mib: Optional[float]
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    deployed_params: Optional[int] = None


def _proc_status_kib(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak resident set size of this process (Linux >= 4.0); False where not possible."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return _proc_status_kib('VmHWM') is not None
    except OSError:
        return False


def measure_module(net, x, multiple: int = 1, threads: int = 1, runs: int = 5, warmup: int = 1,
                   memory: bool = True) -> Measurement:
    """Measure ``net`` (in eval mode) on the input batch ``x``, padded to a multiple of ``multiple`` (see the module
    docstring). The peak memory is meaningful in a fresh process (as ``dckd-profile`` runs it): a first pass on a
    small input loads the libraries' code and caches, then the peak is taken over one pass on ``x``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dckd_basicsr.archs.arch_util import count_parameters, deployed_parameters
    from dckd_basicsr.archs.padding import padded_forward
    torch.set_num_threads(threads)

    def forward(inp):
        with torch.inference_mode():
            return padded_forward(net, inp, multiple)

    peak_mib = None
    if memory:
        small = max(multiple, 8)
        forward(x[..., :small, :small])
        gc.collect()
        if _reset_peak_rss():
            before = _proc_status_kib('VmRSS')
            out = forward(x)
            peak_mib = max(0, _proc_status_kib('VmHWM') - before) / 1024
            del out
    with FlopCounterMode(display=False) as counter:
        out = forward(x)
    flops = int(counter.get_total_flops())
    output_shape = tuple(out.shape)
    del out
    latency_ms = None
    if runs > 0:
        for _ in range(warmup):
            forward(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            forward(x)
            times.append((time.perf_counter() - start) * 1000)
        latency_ms = statistics.median(times)
    return Measurement(count_parameters(net), flops, latency_ms, peak_mib, tuple(x.shape), output_shape,
                       deployed_parameters(net))


def measure(net_opt: Dict[str, Any], size: int = 64, threads: int = 1, runs: int = 5, warmup: int = 1,
            memory: bool = True, seed: int = 0) -> Measurement:
    """Build ``net_opt`` with random weights, in its deployed form (SPAN's fused convolutions), and measure it at a
    ``1 x C x size x size`` input (:func:`measure_module`; inputs padded to the block's ``window_size``).

    Args:
        net_opt: A ``network_*`` block with its ``type``.
        size: Input height and width.
        threads: Intra-op threads.
        runs: Timed runs (the median is reported); 0 skips the latency.
        warmup: Untimed runs before them.
        memory: Measure the peak memory of one forward pass.
        seed: Seed of the random weights and input.
    """
    import torch
    from basicsr.archs import build_network

    from dckd_basicsr.archs.arch_util import input_channels, switch_to_deploy  # the plugin's import registers its archs
    torch.manual_seed(seed)
    net = switch_to_deploy(build_network(dict(net_opt)).eval())
    x = torch.rand(1, input_channels(net), size, size)
    return measure_module(net, x, int(net_opt.get('window_size', 1) or 1), threads, runs, warmup, memory)


def measure_in_subprocess(net_opt: Dict[str, Any], size: int, threads: int, runs: int, warmup: int,
                          memory: bool = True, where: str = '') -> Measurement:
    """:func:`measure` in a fresh ``python -m dckd_basicsr.commands.measurement`` process."""
    request = dict(net_opt=net_opt, size=size, threads=threads, runs=runs, warmup=warmup, memory=memory)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, '-m', 'dckd_basicsr.commands.measurement'], input=json.dumps(request),
                          capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        tail = '\n'.join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise OptionError(f'{where}: building or running {net_opt.get("type")} failed:\n{tail}')
    result = json.loads(lines[-1][len(RESULT_MARK):])
    result['input_shape'] = tuple(result['input_shape'])
    result['output_shape'] = tuple(result['output_shape'])
    return Measurement(**result)


def _worker() -> None:
    """Read a :func:`measure` request (JSON) from stdin, print the result after :data:`RESULT_MARK`."""
    request = json.loads(sys.stdin.read())
    result = measure(**request)
    print(RESULT_MARK + json.dumps(asdict(result)), flush=True)


if __name__ == '__main__':
    _worker()
