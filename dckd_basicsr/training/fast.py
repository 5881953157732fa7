"""``train.fast``: every setting that trades exactness for speed, all off by default (exact fp32), and the frozen
networks (teacher, history model, VQGAN encoder) they mostly concern.

A frozen network is in eval mode with ``requires_grad`` off, is never wrapped in DDP, never in the optimizer and never
in the EMA. :class:`FastSettings` reads ``train.fast``:

* ``autocast`` (``bf16``/``fp16``) and ``channels_last``: the frozen networks only (the student, the losses and the
  code logits of Eq. 8 stay fp32);
* ``amp`` (``bf16``/``fp16``): the whole step, i.e. also the student's forward pass and the loss computation, under
  ``torch.autocast``; it implies ``autocast`` of the same precision unless ``autocast`` is given (``false`` keeps the
  frozen networks in fp32). ``fp16`` scales the loss with ``torch.amp.GradScaler``; the weights, the EMA, the history
  model and the optimizer state stay fp32;
* ``compile`` (``true`` or a ``torch.compile`` mode) and ``compile_strict``: the student, teacher, history model and
  the VQGAN encoder's blocks compiled in place (``nn.Module.compile``, so ``state_dict`` keys never carry
  ``_orig_mod.``). Where compilation is unavailable or fails, one warning and the network runs uncompiled, or, with
  ``compile_strict: true``, an :class:`~dckd_basicsr.errors.OptionError`;
* DCKD adds ``negatives_per_pass``.
"""
import contextlib
import shutil
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from basicsr.utils import get_root_logger
from torch import Tensor, nn

from dckd_basicsr.errors import OptionError

AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')
# Dynamo compiles a block class's forward once per shape and grad mode; the encoder's blocks share one code object
# across all their instances, levels and passes, so its limit of recompilations is raised to this when they compile.
ENCODER_RECOMPILE_LIMIT = 64


def freeze(net: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the state of every frozen network."""
    net.eval()
    net.requires_grad_(False)
    return net


def _precision(fast: Dict[str, Any], key: str, default: Optional[str] = None) -> Optional[str]:
    value = fast.get(key, default) or None
    if value is not None and value not in AUTOCAST_DTYPES:
        raise OptionError(f'train.fast.{key}: {value!r}; use bf16, fp16 or false.')
    return value


def _compile_mode(fast: Dict[str, Any]) -> Optional[str]:
    value = fast.get('compile', False)
    if value is None or value is False:
        return None
    if value is True:
        return 'default'
    if value not in COMPILE_MODES:
        raise OptionError(f'train.fast.compile: {value!r}; use true, false or a torch.compile mode '
                          f'({", ".join(COMPILE_MODES)}).')
    return value


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


def fp16_supported(device: torch.device) -> bool:
    """Whether ``torch.autocast`` runs fp16 on ``device`` (torch warns and disables it where it does not)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with torch.autocast(device_type=device.type, dtype=torch.float16):
            return torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.float16


class FastSettings:
    """``train.fast`` of one model, checked when the model is built.

    Args:
        fast: The ``train.fast`` mapping (None or empty: exact fp32, the default).
        known: The keys the model understands (:data:`KEYS` always; DCKD adds ``negatives_per_pass``).
        device: Device the model runs on.
        model: Model class name, for messages.
    """

    KEYS = ('amp', 'autocast', 'channels_last', 'compile', 'compile_strict')

    def __init__(self, fast: Optional[Dict[str, Any]], known: Sequence[str], device: torch.device, model: str):
        fast = fast or {}
        if not isinstance(fast, dict):
            raise OptionError(f'train.fast: {fast!r}; give a mapping, e.g. {{autocast: bf16, channels_last: true}}.')
        unknown = sorted(set(fast) - set(known))
        if unknown:
            raise OptionError(f'train.fast.{unknown[0]}: unknown key; {model} knows {", ".join(known)}.')
        amp = _precision(fast, 'amp')
        autocast = _precision(fast, 'autocast', amp)  # amp implies autocast of the frozen networks unless given
        for key, value in (('amp', amp), ('autocast', autocast)):
            if value == 'fp16' and not fp16_supported(device):
                raise OptionError(f'train.fast.{key}: fp16; torch {torch.__version__} has no fp16 autocast on '
                                  f'{device.type}; use bf16.')
        self.options = dict(fast, amp=amp, autocast=autocast, channels_last=bool(fast.get('channels_last', False)),
                            compile=_compile_mode(fast), compile_strict=bool(fast.get('compile_strict', False)))
        self.device = device
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range. Disabled, the scaler is a no-op.
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == 'fp16')
        self.overflow = False  # whether the last optimizer step was skipped by the scaler (fp16 gradient overflow)
        self._compile_warned = False

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    # ------------------------------------------------------------------ precision
    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the frozen networks (``train.fast.autocast``, implied by ``amp``); without it, a no-op, or,
        inside the ``amp`` region, autocast switched off."""
        name = self.options['autocast']
        if name is None:
            if self.options['amp'] is None:
                return contextlib.nullcontext()
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=AUTOCAST_DTYPES[name])

    def amp(self) -> contextlib.AbstractContextManager:
        """Autocast for the whole step (``train.fast.amp``): a no-op unless it is set."""
        name = self.options['amp']
        if name is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=AUTOCAST_DTYPES[name])

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()``, on the loss scaled by the GradScaler under ``amp: fp16``."""
        self.overflow = False
        (self.scaler.scale(loss) if self.scaler.is_enabled() else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """``optimizer.step()``, through the GradScaler under ``amp: fp16``: gradients that overflowed in fp16 make
        the scaler skip the step and lower its scale (not a non-finite loss: the loss values were finite). Returns
        whether the step was taken (also in :attr:`overflow`)."""
        if not self.scaler.is_enabled():
            optimizer.step()
            self.overflow = False
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        self.overflow = self.scaler.get_scale() < scale
        if self.overflow:
            get_root_logger().debug(f'fp16 gradients overflowed: optimizer step skipped, loss scale {scale} -> '
                                    f'{self.scaler.get_scale()}.')
        return not self.overflow

    def keep_gradients_for_next_step(self, optimizer: torch.optim.Optimizer) -> None:
        """After :meth:`step`, make the unscaled gradients it left fit the next scaled backward pass (DUKD adds step
        2's gradients to step 1's): multiply them by the current scale, which the next :meth:`step` divides out."""
        if not self.scaler.is_enabled():
            return
        scale = self.scaler.get_scale()
        for group in optimizer.param_groups:
            for param in group['params']:
                if param.grad is not None:
                    param.grad.mul_(scale)

    # ------------------------------------------------------------------ memory format
    def input(self, x: Tensor) -> Tensor:
        """``x`` in the frozen networks' memory format (channels_last with ``train.fast.channels_last``)."""
        return x.contiguous(memory_format=torch.channels_last) if self.options['channels_last'] else x

    def prepare(self, net: nn.Module) -> nn.Module:
        """Convert a frozen network to channels_last once, when ``train.fast.channels_last`` asks for it."""
        if self.options['channels_last'] and not getattr(net, '_dckd_channels_last', False):
            net.to(memory_format=torch.channels_last)
            net._dckd_channels_last = True
        return net

    def run(self, net: nn.Module, x: Tensor) -> Tensor:
        """A frozen network's forward without gradient, under :meth:`autocast`; fp32, contiguous output."""
        with torch.no_grad(), self.autocast():
            out = net(self.input(x))
        return out.float().contiguous()

    # ------------------------------------------------------------------ compilation
    def compile(self, net: nn.Module, what: str, blocks: Optional[Tuple[type, ...]] = None) -> nn.Module:
        """Compile ``net`` in place with ``train.fast.compile`` (a no-op without it); with ``blocks``, compile only
        its submodules of those types (static shapes), for a network whose own passes are not plain forwards.

        ``what`` names the network in messages. When compilation is unavailable, or fails at a call (compiling
        happens at the first call and again for each new input size or grad mode), the network runs uncompiled from
        then on after one warning for the run, or an OptionError is raised with ``compile_strict``.
        """
        mode = self.options['compile']
        if mode is None:
            return net
        reason = compile_unavailable(self.device)
        if reason is not None:
            self._compile_failed(what, reason)
            return net
        targets = [net] if blocks is None else [module for module in net.modules() if isinstance(module, blocks)]
        if blocks is not None:
            import torch._dynamo.config as dynamo_config
            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, ENCODER_RECOMPILE_LIMIT)
        for module in targets:
            module.compile(mode=mode, dynamic=False if blocks is not None else None)
            module._compiled_call_impl = self._guarded(module, module._compiled_call_impl, what)
        return net

    def _guarded(self, module: nn.Module, compiled: Callable, what: str) -> Callable:
        errors = _compile_errors()

        def call(*args, **kwargs):
            try:
                return compiled(*args, **kwargs)
            except errors as error:
                self._compile_failed(what, f'{type(error).__name__}: {str(error).strip().splitlines()[0]}', error)
                module._compiled_call_impl = None  # from now on the plain forward
                return module._call_impl(*args, **kwargs)

        return call

    def _compile_failed(self, what: str, reason: str, error: Optional[BaseException] = None) -> None:
        if self.options['compile_strict']:
            raise OptionError(f'train.fast.compile: {what} cannot be compiled: {reason}. Set compile_strict: false '
                              'to train uncompiled instead.') from error
        if not self._compile_warned:
            get_root_logger().warning(f'train.fast.compile: {what} cannot be compiled ({reason}); training goes on '
                                      'uncompiled where compilation fails (compile_strict: true makes this an error).')
            self._compile_warned = True
