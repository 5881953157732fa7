"""Every row of Table 2 on the KD base: three training steps of each generated option file with tiny networks
(in-process, CPU), and the kd_opt alias. FAKD and DUKD have their own files (test_fakd.py, test_dukd.py)."""
import copy

import pytest
import torch
from basicsr.models import build_model

from helpers import (batch, generator_module, in_process, kd_options, save_random_network, tiny_network, tiny_rcan,
                     tiny_swinir)

import dckd_basicsr  # noqa: F401
from dckd_basicsr.errors import OptionError


def test_kd_opt_is_an_alias_of_logits_opt(tmp_path):
    model = build_model(kd_options(tmp_path, tiny_rcan(1), tiny_rcan(2), kd_opt=dict(type='L1Loss', loss_weight=0.5)))
    assert model.loss_names == ['l_pix', 'l_kd'] and model.cri_kd.loss_weight == 0.5
    both = kd_options(tmp_path, tiny_rcan(1), tiny_rcan(2), kd_opt=dict(type='L1Loss'), logits_opt=dict(type='L1Loss'))
    with pytest.raises(OptionError, match='kd_opt and train.logits_opt'):
        build_model(both)


# ---------------------------------------------------------------- every row, three steps
EXPECTED_TERMS = {
    'Scratch': ['l_pix'], 'Logits': ['l_pix', 'l_kd'], 'FAKD': ['l_pix', 'l_kd', 'l_fakd'],
    'DUKD': ['l_pix', 'l_kd', 'l_zoom_in'],  # the x2 files: no zoom-out
    'DCKD': ['l_pix', 'l_kd', 'l_dcl', 'l_dmm'],
    'DCKDstar': ['l_pix', 'l_kd', 'l_lcr', 'l_dcl', 'l_dmm'],  # the DCKD authors' lcr_opt, no zoom terms
}


@pytest.fixture(scope='module')
def shipped_rows():
    gen = generator_module()
    return {(b, m): gen.method_options(b, 2, m) for b in ('SwinIR', 'RCAN') for m in gen.METHODS}


@pytest.mark.parametrize('backbone', ['SwinIR', 'RCAN'])
@pytest.mark.parametrize('method', list(EXPECTED_TERMS))
def test_three_steps_of_every_row_train_only_the_student(tmp_path, shipped_rows, backbone, method):
    """The shipped option file of the row (x2) with tiny networks and checkpoints; everything else as shipped."""
    opt = copy.deepcopy(shipped_rows[(backbone, method)])
    student, teacher = ((tiny_swinir('student', 2), tiny_swinir('teacher', 3)) if backbone == 'SwinIR' else
                        (tiny_rcan(2), tiny_rcan(3)))
    in_process(opt, tmp_path)
    opt['network_g'] = student
    opt['train']['ema_decay'] = 0.5
    if 'network_t' in opt:
        opt['network_t'] = teacher
        opt['path']['pretrain_network_t'] = save_random_network(teacher, tmp_path / 'teacher.pth', seed=1)
    if 'network_vqgan' in opt:
        opt['network_vqgan'] = tiny_network('vqgan')
        opt['path']['pretrain_network_vqgan'] = save_random_network(opt['network_vqgan'], tmp_path / 'vq.ckpt', seed=2,
                                                                    key='state_dict')
        opt['train'].update(num_neg=2, step=[2])
        opt['train']['cl_opt']['weights'] = [0.25, 0.5, 1.0]  # the tiny encoder's three levels
    model = build_model(opt)
    start = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    teacher_start = {k: v.clone() for k, v in model.net_t.state_dict().items()} if hasattr(model, 'net_t') else {}
    for it in range(1, 4):
        model.feed_data(batch(seed=it))
        model.optimize_parameters(it)
        assert list(model.log_dict) == EXPECTED_TERMS[method], it
        assert all(torch.isfinite(torch.tensor(v)) and v > 0 for v in model.log_dict.values())
    assert any(not torch.equal(start[k], v) for k, v in model.net_g.state_dict().items())
    optimized = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert optimized == {id(p) for p in model.net_g.parameters()}
    if teacher_start:
        assert not model.net_t.training
        assert all(p.grad is None and not p.requires_grad for p in model.net_t.parameters())
        assert all(torch.equal(teacher_start[k], v) for k, v in model.net_t.state_dict().items())
