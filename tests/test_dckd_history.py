"""History model update rule and schedule (DCR), negative generator and DUKD's invertible transforms."""
import math

import pytest
import torch
from torch import nn

import dckd_basicsr  # noqa: F401
from dckd_basicsr.degradations import NegativeGenerator, gaussian_kernels
from dckd_basicsr.invertible_ops import apply_invertible_ops, random_invertible_ops, undo_invertible_ops
from dckd_basicsr.errors import OptionError
from dckd_basicsr.history import HistorySchedule, update_history


class TwoParams(nn.Module):

    def __init__(self, a, b, scale, index):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.b = nn.Parameter(torch.tensor(b))
        self.register_buffer('scale', torch.tensor(scale))
        self.register_buffer('index', torch.tensor(index))


def test_update_is_the_hand_computed_ema():
    history = TwoParams(1.0, [2.0, 3.0], 10.0, [0, 1])
    source = TwoParams(5.0, [7.0, 11.0], 20.0, [4, 5])
    update_history(history, source, decay=0.1)
    # theta_his <- 0.1 * theta_his + 0.9 * theta_src
    assert history.a.item() == pytest.approx(0.1 * 1 + 0.9 * 5)  # 4.6
    assert history.b.tolist() == pytest.approx([0.2 + 6.3, 0.3 + 9.9])  # 6.5, 10.2
    assert history.scale.item() == pytest.approx(1 + 18)  # float buffers follow the rule
    assert history.index.tolist() == [4, 5] and history.index.dtype == torch.int64  # integer buffers are copied
    update_history(history, source, decay=0.1)
    assert history.a.item() == pytest.approx(0.1 * 4.6 + 0.9 * 5)
    assert source.a.item() == 5.0 and source.b.tolist() == [7.0, 11.0]


def test_schedule_at_the_authors_iterations():
    schedule = HistorySchedule([1000, 2000, 3000])
    assert (schedule.interval(1000), schedule.should_update(1000)) == (1000, True)
    assert (schedule.interval(100000), schedule.should_update(100000)) == (1000, True)
    assert (schedule.interval(100001), schedule.should_update(100001)) == (2000, False)
    assert schedule.should_update(102000) and not schedule.should_update(101000)
    assert (schedule.interval(300000), schedule.interval(300001)) == (3000, 3000)
    # past the end of the list (the authors' code crashes there): the last interval stays in force
    assert (schedule.interval(350000), schedule.should_update(350000)) == (3000, False)
    assert schedule.should_update(351000) and schedule.interval(10**7) == 3000
    assert [i for i in range(1, 10001) if schedule.should_update(i)] == list(range(1000, 10001, 1000))


def test_short_step_list_keeps_its_last_interval():
    schedule = HistorySchedule([2, 3], span=4)
    assert [i for i in range(1, 20) if schedule.should_update(i)] == [2, 4, 6, 9, 12, 15, 18]
    with pytest.raises(OptionError, match='train.step'):
        HistorySchedule([])
    with pytest.raises(OptionError, match='train.step'):
        HistorySchedule([1000, 0])


def test_negatives_are_the_lq_then_degraded_copies():
    lq = torch.full((2, 3, 16, 16), 0.5)
    lq[1] = 0.25
    generator = torch.Generator().manual_seed(0)
    out = NegativeGenerator(num_neg=3, gaussian_noise_prob=1, gray_noise_prob=1)(lq, generator)
    assert out.shape == (8, 3, 16, 16)
    assert torch.equal(out[:2], lq)
    noise = out[2:] - lq.repeat(3, 1, 1, 1)
    assert torch.equal(noise[:, 0], noise[:, 1]) and torch.equal(noise[:, 1], noise[:, 2])  # gray noise
    sigma = noise.flatten(1).std(dim=1) * 255
    assert (sigma > 0.5).all() and (sigma < 33).all()
    # different negatives of one image carry different noise patterns
    assert not torch.allclose(noise[0] / noise[0].std(), noise[2] / noise[2].std(), atol=0.1)
    again = NegativeGenerator(num_neg=3, gaussian_noise_prob=1, gray_noise_prob=1)(lq, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_color_noise_and_disabled_ops():
    lq = torch.full((4, 3, 12, 12), 0.5)
    out = NegativeGenerator(num_neg=1, gray_noise_prob=0)(lq, torch.Generator().manual_seed(1))
    assert not torch.equal(out[4:, 0], out[4:, 1])
    off = NegativeGenerator(num_neg=2, gaussian_noise_prob=0)(lq, torch.Generator().manual_seed(1))
    assert torch.equal(off, lq.repeat(3, 1, 1, 1))


def test_blur_and_resize_stay_in_range_and_shape():
    torch.manual_seed(0)
    lq = torch.rand(3, 3, 20, 24)
    gen = NegativeGenerator(num_neg=2, gaussian_noise_prob=0, gaussian_blur_prob=1, resize_prob=1)
    out = gen(lq, torch.Generator().manual_seed(2))
    assert out.shape == (9, 3, 20, 24) and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out[3:6], lq)
    assert out[3:].std() < lq.std()  # blurred


def test_gaussian_kernel_hand_computed():
    kernel = gaussian_kernels(torch.tensor([3]), torch.tensor([1.0]), torch.tensor([1.0]), max_size=5)[0]
    e = math.exp(-0.5)
    one_d = torch.tensor([0, e, 1, e, 0]) / (1 + 2 * e)
    assert torch.allclose(kernel, one_d[:, None] * one_d[None, :], atol=1e-7)
    aniso = gaussian_kernels(torch.tensor([5]), torch.tensor([0.5]), torch.tensor([2.0]), max_size=5)[0]
    assert aniso.sum().item() == pytest.approx(1.0) and aniso[2, 0] < aniso[0, 2]  # wider along y


def test_negative_generator_options():
    assert NegativeGenerator.from_options({'train': {'num_neg': 6}, 'resize_prob': 0.3}).num_neg == 6
    assert NegativeGenerator.from_options({'train': {}, 'resize_prob': 0.3}).resize_prob == 0.3
    with pytest.raises(OptionError, match='train.num_neg'):
        NegativeGenerator(num_neg=0)
    with pytest.raises(OptionError, match='gray_noise_prob'):
        NegativeGenerator(gray_noise_prob=1.5)


def test_invertible_ops_round_trip_and_order():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 6, 6)
    masks = random_invertible_ops(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(undo_invertible_ops(apply_invertible_ops(x, masks), masks), x)
    every = {name: torch.ones(1, 1, 1, 1, dtype=torch.bool) for name in masks}
    image = torch.tensor([[0.0, 0.1], [0.2, 0.3]]).view(1, 1, 2, 2)
    # invert, vflip, hflip, transpose: [[1, .9], [.8, .7]] -> [[.8, .7], [1, .9]] -> [[.7, .8], [.9, 1]] -> transpose
    assert torch.allclose(apply_invertible_ops(image, every), torch.tensor([[0.7, 0.9], [0.8, 1.0]]).view(1, 1, 2, 2))
