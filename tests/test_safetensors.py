"""safetensors checkpoints (issue 16): ``logger.save_format: safetensors`` writes the networks as
``models/net_*_<iter>.safetensors``, resume reads them and ends with the weights of the ``.pth`` run, tensor for tensor;
every checkpoint reader (teacher and encoder files, ``path.pretrain_network_g``) accepts ``.safetensors``.
"""
import copy

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model
from safetensors.torch import save_file

from helpers import batch, dckd_options, tiny_network, write_checkpoints

import dckd_basicsr  # noqa: F401
from dckd_basicsr.checkpoints.safe_load import load_checkpoint_file, read_safetensors
from dckd_basicsr.errors import OptionError
from dckd_basicsr.training.resume import check_resume


@pytest.fixture
def files(tmp_path):
    return write_checkpoints(tmp_path)


def train(model, iters):
    for current_iter in iters:
        model.feed_data(batch(current_iter))
        model.optimize_parameters(current_iter)
        model.update_learning_rate(current_iter, warmup_iter=-1)


def run_with_resume(root, files, save_format):
    """Two iterations, a checkpoint, a fresh model resumed from it, two more iterations; the resumed model."""
    root.mkdir()
    opt = dckd_options(root, files, step=[1])
    opt['logger'] = {'save_format': save_format}
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(opt))
    train(model, (1, 2))
    model.save(0, 2)
    opt['path']['resume_state'] = f"{opt['path']['training_states']}/2.state"
    check_resume(opt, 2)
    torch.manual_seed(0)
    model = build_model(opt)
    model.resume_training(torch.load(opt['path']['resume_state'], weights_only=True))
    train(model, (3, 4))
    return model, opt


def test_safetensors_checkpoints_resume_to_the_weights_of_the_pth_run(tmp_path, files):
    pth, _ = run_with_resume(tmp_path / 'pth', files, 'pth')
    safe, opt = run_with_resume(tmp_path / 'safe', files, 'safetensors')
    models = tmp_path / 'safe' / 'models'
    assert sorted(p.name for p in models.iterdir()) == ['net_g_2.safetensors', 'net_his_2.safetensors']
    assert opt['path']['pretrain_network_g'] == str(models / 'net_g_2.safetensors')  # what resume loaded
    for name in ('net_g', 'net_g_ema', 'net_his'):
        a, b = getattr(pth, name).state_dict(), getattr(safe, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a), name
    # the file holds what the .pth file holds, under the same param keys, bit for bit
    saved = read_safetensors(models / 'net_g_2.safetensors')
    reference = torch.load(tmp_path / 'pth' / 'models' / 'net_g_2.pth', weights_only=True)
    assert list(saved) == list(reference) == ['params', 'params_ema']
    for key in reference:
        assert saved[key].keys() == reference[key].keys()  # safetensors sorts the names
        assert all(torch.equal(saved[key][name], value) for name, value in reference[key].items())
    assert load_checkpoint_file(str(models / 'net_his_2.safetensors')).keys() == {'params'}


def test_a_hub_safetensors_teacher_and_pretrained_student_load(tmp_path, files):
    """A flat state dict in a .safetensors file (as model hubs publish) works as path.pretrain_network_t and
    path.pretrain_network_g (param keys do not apply to flat files)."""
    teacher = torch.load(files['teacher'], weights_only=True)['params']
    save_file({key: value.contiguous() for key, value in teacher.items()}, str(tmp_path / 'teacher.safetensors'))
    torch.manual_seed(5)
    student = build_network(tiny_network('swinir_student')).state_dict()
    save_file(student, str(tmp_path / 'student.safetensors'))
    opt = dckd_options(tmp_path, dict(files, teacher=str(tmp_path / 'teacher.safetensors')))
    opt['path'].update(pretrain_network_g=str(tmp_path / 'student.safetensors'), param_key_g='params_ema')
    model = build_model(opt)
    assert all(torch.equal(model.net_t.state_dict()[key], value) for key, value in teacher.items())
    for net in (model.net_g, model.net_g_ema):
        assert all(torch.equal(net.state_dict()[key], value) for key, value in student.items())


def test_a_broken_safetensors_file_names_the_option(tmp_path, files):
    (tmp_path / 'broken.safetensors').write_bytes(b'not a safetensors file')
    with pytest.raises(OptionError, match=r'path.pretrain_network_t: .*broken.safetensors: the file is not a '
                                          'safetensors file'):
        build_model(dckd_options(tmp_path, dict(files, teacher=str(tmp_path / 'broken.safetensors'))))


def test_an_unknown_save_format_is_an_option_error(tmp_path, files):
    opt = dckd_options(tmp_path, files)
    opt['logger'] = {'save_format': 'ckpt'}
    with pytest.raises(OptionError, match=r"logger.save_format: 'ckpt'; use pth \(default\) or safetensors"):
        build_model(opt)  # when the model is built, not at the first checkpoint
