"""``train.fast.compile``: networks compiled in place with ``torch.compile``, falling back to eager where it fails.

:class:`Compiler` compiles a network in place (``nn.Module.compile``, so ``state_dict`` keys never carry
``_orig_mod.`` and checkpoints load strictly into uncompiled networks), or only its blocks of given types for a
network whose passes are not plain forwards (the VQGAN encoder). Where compilation is unavailable
(:func:`compile_unavailable`) or fails at a call, one warning and the network runs uncompiled, or, with
``train.fast.compile_strict: true``, an :class:`~dckd_basicsr.errors.OptionError`.
"""
import shutil
from typing import Callable, Optional, Tuple

import torch
from basicsr.utils import get_root_logger
from torch import nn

from dckd_basicsr.errors import OptionError

# Dynamo compiles a block class's forward once per shape and grad mode; the encoder's blocks share one code object
# across all their instances, levels and passes, so its limit of recompilations is raised to this when they compile.
BLOCK_RECOMPILE_LIMIT = 64


def compile_unavailable(device: torch.device) -> Optional[str]:
    """Why ``torch.compile`` (inductor) cannot run on ``device`` here, or None when it can."""
    if not hasattr(torch, 'compile'):
        return f'torch {torch.__version__} has no torch.compile'
    try:
        import torch._dynamo as dynamo
        if not dynamo.is_dynamo_supported():
            return 'torch.compile does not support this Python version'
    except Exception as error:  # noqa: B902  (an import failure is a reason too)
        return f'torch._dynamo is unavailable ({error})'
    if device.type == 'cpu':
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
            compiler = get_cpp_compiler()
        except Exception as error:  # noqa: B902
            return f'no C++ compiler for inductor ({error})'
        if not shutil.which(compiler):
            return f'no C++ compiler for inductor ({compiler} not found; install gcc or set CXX)'
    elif device.type == 'cuda':
        from torch.utils._triton import has_triton
        if not has_triton():
            return 'triton is not installed'
    return None


def _compile_errors() -> Tuple[type, ...]:
    """The exception types of a failed compilation (dynamo tracing, inductor code generation, the C++ build)."""
    errors = []
    try:
        from torch._dynamo.exc import TorchDynamoException
        errors.append(TorchDynamoException)
    except ImportError:
        pass
    try:
        from torch._inductor.exc import InductorError
        errors.append(InductorError)
    except ImportError:
        pass
    return tuple(errors) or (RuntimeError, )


class Compiler:
    """Compiles one model's networks with ``train.fast.compile`` (a no-op without it).

    Args:
        mode: A ``torch.compile`` mode, or None (compile nothing).
        strict: ``train.fast.compile_strict``.
        device: Device the model runs on.
    """

    def __init__(self, mode: Optional[str], strict: bool, device: torch.device):
        self.mode = mode
        self.strict = strict
        self.device = device
        self._warned = False

    def compile(self, net: nn.Module, option_key: str, blocks: Optional[Tuple[type, ...]] = None) -> nn.Module:
        """Compile ``net`` in place; with ``blocks``, only its submodules of those types (static shapes).

        ``option_key`` names the network in messages (``network_g``). Compilation happens at the first call and
        again for each new input size or grad mode; when it is unavailable or fails at a call, the network runs
        uncompiled from then on (one warning for the run), or an OptionError is raised with ``compile_strict``.
        """
        if self.mode is None:
            return net
        reason = compile_unavailable(self.device)
        if reason is not None:
            self._failed(option_key, reason)
            return net
        targets = [net] if blocks is None else [module for module in net.modules() if isinstance(module, blocks)]
        if blocks is not None:
            import torch._dynamo.config as dynamo_config
            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, BLOCK_RECOMPILE_LIMIT)
        for module in targets:
            module.compile(mode=self.mode, dynamic=False if blocks is not None else None)
            module._compiled_call_impl = self._guarded(module, module._compiled_call_impl, option_key)
        return net

    def _guarded(self, module: nn.Module, compiled: Callable, option_key: str) -> Callable:
        errors = _compile_errors()

        def call(*args, **kwargs):
            try:
                return compiled(*args, **kwargs)
            except errors as error:
                self._failed(option_key, f'{type(error).__name__}: {str(error).strip().splitlines()[0]}', error)
                module._compiled_call_impl = None  # from now on the plain forward
                return module._call_impl(*args, **kwargs)

        return call

    def _failed(self, option_key: str, reason: str, error: Optional[BaseException] = None) -> None:
        if self.strict:
            raise OptionError(f'train.fast.compile: {option_key} cannot be compiled: {reason}. Set compile_strict: '
                              'false to train uncompiled instead.') from error
        if not self._warned:
            get_root_logger().warning(f'train.fast.compile: {option_key} cannot be compiled ({reason}); training goes '
                                      'on uncompiled where compilation fails (compile_strict: true makes this an '
                                      'error).')
            self._warned = True
