"""The label-consistency transforms (dckd_basicsr/distill/invertible_ops.py): invert, flips and transpose, drawn per
sample, applied and undone (LCR of DCKD* and DUKD's zoom-in term)."""
import itertools

import torch

from dckd_basicsr.distill.invertible_ops import (INVERTIBLE_OPS, apply_invertible_ops, random_invertible_ops,
                                                 undo_invertible_ops)


def test_invertible_ops_round_trip_and_order():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 6, 6)
    masks = random_invertible_ops(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(undo_invertible_ops(apply_invertible_ops(x, masks), masks), x)
    every = {name: torch.ones(1, 1, 1, 1, dtype=torch.bool) for name in masks}
    image = torch.tensor([[0.0, 0.1], [0.2, 0.3]]).view(1, 1, 2, 2)
    # invert, vflip, hflip, transpose: [[1, .9], [.8, .7]] -> [[.8, .7], [1, .9]] -> [[.7, .8], [.9, 1]] -> transpose
    assert torch.allclose(apply_invertible_ops(image, every), torch.tensor([[0.7, 0.9], [0.8, 1.0]]).view(1, 1, 2, 2))


def test_every_combination_of_invertible_ops_is_undone():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4) / 128  # dyadic: 1 - (1 - x) is exact
    for chosen in itertools.product([False, True], repeat=len(INVERTIBLE_OPS)):
        masks = {name: torch.tensor(c).view(1, 1, 1, 1) for name, c in zip(INVERTIBLE_OPS, chosen)}
        transformed = apply_invertible_ops(x, masks)
        assert torch.equal(undo_invertible_ops(transformed, masks), x), chosen
        assert torch.equal(transformed, x) == (not any(chosen)), chosen  # every op changes this image
