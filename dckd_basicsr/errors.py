"""Errors caused by the user's option file or command line, and how the entry points report them."""
import contextlib
import difflib
import sys
from typing import Iterable, Iterator


class OptionError(ValueError):
    """A mistake in an option file, a command-line flag or a path it names.

    The plugin's entry points print these as one message, without a traceback of BasicSR internals.
    """


class UnknownTypeError(OptionError, KeyError):
    """A ``type`` (or ``model_type``) that no BasicSR registry knows. Also a ``KeyError``, as BasicSR raises."""

    def __init__(self, registry: str, name: str, known: Iterable[str], plugin: Iterable[str] = (), where: str = ''):
        known = sorted(known)
        plugin = sorted(plugin)
        lines = [f"{where + ': ' if where else ''}no {registry} named '{name}' is registered."]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        if close:
            lines.append(f'Did you mean: {", ".join(close)}?')
        if plugin:
            lines.append(f'dckd-basicsr {registry} names: {", ".join(plugin)}')
        lines.append(f'All registered {registry} names: {", ".join(known)}')
        super().__init__('\n'.join(lines))

    def __str__(self) -> str:  # KeyError would print the message quoted, on one line
        return self.args[0]


class ConversionError(ValueError):
    """A checkpoint that cannot become a network's weights (raised by the checkpoint converters and by
    ``SpandrelTeacher``); ``dckd_basicsr.checkpoints.load_pretrained`` turns it into an :class:`OptionError` naming the
    option and the file."""


class NonFiniteLossError(FloatingPointError):
    """Training stopped after ``train.max_nonfinite_steps`` consecutive steps with a NaN/Inf loss term."""


class RunStoppedError(RuntimeError):
    """Training stopped for a reason the user acts on outside the option file; the message says what and what to do."""


class CheckpointWriteError(RunStoppedError):
    """A checkpoint file could not be written (``logger.on_save_failure: stop``)."""


class CollectiveTimeoutError(RunStoppedError):
    """A collective waited longer than ``dist_params.timeout_s`` for another rank."""


class BadSampleError(RunStoppedError):
    """A phase met more undecodable samples than ``datasets.<phase>.max_bad_samples`` allows."""


@contextlib.contextmanager
def report_option_errors(prog: str = 'dckd-basicsr') -> Iterator[None]:
    """Turn an :class:`OptionError`, a :class:`NonFiniteLossError` or a :class:`RunStoppedError` into ``prog: error:
    <message>`` on stderr and exit status 2: all are for the user to act on, and BasicSR's stack trace would only hide
    the message."""
    try:
        yield
    except (OptionError, NonFiniteLossError, RunStoppedError) as error:
        print(f'{prog}: error: {error}', file=sys.stderr, flush=True)
        sys.exit(2)
