"""The VQGAN encoder of DCKD (dckd_basicsr/archs/vqgan_arch.py): input size rule, Eq. 5 taps and Eq. 8 code logits
of a truncated batched pass against full per-sample passes, the input range. The anchor's store-less pass is checked
in test_fast_dckd.py."""
import pytest
import torch

from helpers import arch_args, tiny_network

from dckd_basicsr.archs.vqgan_arch import VQGANEncoder
from dckd_basicsr.errors import OptionError


def test_encoder_input_must_be_a_multiple_of_its_stride():
    encoder = VQGANEncoder(**arch_args(tiny_network('vqgan')))
    with pytest.raises(OptionError, match='multiples of 4'):
        encoder.features(torch.rand(1, 3, 12, 10))


def test_encoder_truncated_and_full_passes_agree():
    torch.manual_seed(0)
    encoder = VQGANEncoder(**arch_args(tiny_network('vqgan'))).eval()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        taps, logits = encoder.encode(x, full_rows=1)
        assert [f.shape[1:] for f in taps] == [(32, 16, 16), (32, 8, 8), (64, 4, 4)]
        assert logits.shape == (1, 4, 4, 16)
        reference = [encoder.features(x[i:i + 1]) for i in range(3)]
        for level, tap in enumerate(taps):
            assert torch.allclose(tap, torch.cat([r[level] for r in reference]), atol=1e-5)
        assert torch.allclose(logits, encoder.encode(x[:1], taps=False)[1], atol=1e-4)
        dist = encoder.code_distribution(x[:1])
        assert torch.allclose(dist.sum(-1), torch.ones(1, 4, 4))
        minus_one = VQGANEncoder(input_range=[-1, 1], **arch_args(tiny_network('vqgan')))
        minus_one.load_state_dict(encoder.state_dict())
        assert torch.allclose(minus_one.eval().features(x)[0], encoder.features(x * 2 - 1)[0])
