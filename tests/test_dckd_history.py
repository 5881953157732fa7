"""DCKD's history model (dckd_basicsr/distill/history.py): the update rule and its schedule (DCR)."""
import pytest
import torch
from torch import nn

import dckd_basicsr  # noqa: F401
from dckd_basicsr.distill.history import HistorySchedule, update_history
from dckd_basicsr.errors import OptionError


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
    # theta_his <- 0.1 * theta_his + 0.9 * theta_src: 0.1 * 1 + 0.9 * 5 = 4.6; 0.2 + 6.3, 0.3 + 9.9; 1 + 18
    assert history.a.item() == pytest.approx(4.6)
    assert history.b.tolist() == pytest.approx([6.5, 10.2])
    assert history.scale.item() == pytest.approx(19.0)  # float buffers follow the rule
    assert history.index.tolist() == [4, 5] and history.index.dtype == torch.int64  # integer buffers are copied
    update_history(history, source, decay=0.1)
    assert history.a.item() == pytest.approx(4.96)  # 0.1 * 4.6 + 0.9 * 5
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
