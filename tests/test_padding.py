"""The padding rule of validation and inference (dckd_basicsr/archs/padding.py): pad bottom-right to a multiple, run,
crop back."""
import torch
from basicsr.archs import build_network
from torch.nn import functional as F

from helpers import tiny_swinir

import dckd_basicsr  # noqa: F401
from dckd_basicsr.archs.padding import padded_forward


def test_padded_forward_crops_back():
    net = build_network(tiny_swinir('student'))
    x = torch.rand(1, 3, 6, 6)
    out = padded_forward(net, x, 4)
    assert out.shape == (1, 3, 12, 12)
    assert torch.equal(out, net(F.pad(x, (0, 2, 0, 2), mode='reflect'))[..., :12, :12])
