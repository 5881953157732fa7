"""The loss terms of a model, declared once: each model class lists its terms of Eq. 10 in ``LOSS_TERMS``, and
building them, naming them in the log, checking their option blocks and refusing a model without any all read that
table.

A term is on when its option block (``train.<option>``, or one of its aliases) is given and off when it is left out,
so "Logits", "DCR only", "DMM only", "DCKD" and "DCKD*" are plain option files.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

from basicsr.losses import build_loss

from dckd_basicsr.errors import OptionError


@dataclass(frozen=True)
class LossTerm:
    """One term of the training loss.

    Attributes:
        name: The name it is logged under (``l_pix``).
        option: The ``train`` block that turns it on and builds it (``pixel_opt``).
        attribute: The model attribute holding the built loss, None when off (``cri_pix``).
        description: What it is, for messages and docs (``L_rec, Eq. 10``).
        aliases: Other names of the same block (``kd_opt`` for ``logits_opt``); at most one may be given.
        model_keys: Keys of the block that the model reads itself, not passed to the loss (FAKD's layer names).
    """
    name: str
    option: str
    attribute: str
    description: str
    aliases: Tuple[str, ...] = ()
    model_keys: Tuple[str, ...] = ()

    def given(self, train_opt: Dict[str, Any]) -> Tuple[str, Any]:
        """(key, block) of the option block given for this term, or (``option``, None)."""
        given = [key for key in (self.option, *self.aliases) if train_opt.get(key)]
        if len(given) > 1:
            raise OptionError(f'train.{given[1]} and train.{given[0]} are the same term ({self.description}; '
                              f'{given[1]} is an alias); give only one of them.')
        return (given[0], train_opt[given[0]]) if given else (self.option, None)

    def loss_options(self, train_opt: Dict[str, Any]) -> Dict[str, Any]:
        """The block without the keys the model reads itself (what ``build_loss`` receives), or None."""
        _, block = self.given(train_opt)
        return None if block is None else {k: v for k, v in block.items() if k not in self.model_keys}


def build_loss_terms(model: Any, terms: Sequence[LossTerm]) -> List[str]:
    """Build every term of ``terms`` into ``model.<attribute>`` (None when off); returns the names of those on.

    Raises OptionError naming every option block when none is given.
    """
    train_opt = model.opt['train']
    names = []
    for term in terms:
        options = term.loss_options(train_opt)
        setattr(model, term.attribute, None if options is None else build_loss(options).to(model.device))
        if options is not None:
            names.append(term.name)
    if not names:
        raise OptionError(f'{type(model).__name__}: no loss term is configured; give at least one of '
                          f'{", ".join(f"train.{term.option}" for term in terms)}.')
    return names


def model_read_keys(terms: Sequence[LossTerm]) -> Dict[str, Tuple[str, ...]]:
    """``{'train.<block>': keys}`` of the keys each term's block carries for the model, not for its loss."""
    return {f'train.{key}': term.model_keys for term in terms for key in (term.option, *term.aliases)
            if term.model_keys}
