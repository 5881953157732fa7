"""FAKD on KDModel against the FAKD authors' own code: one training step on the fixture of
tests/golden/make_fakd_golden.py (tiny RCAN x2, 10 groups of 1 block vs 10 of 2, their weights and batch).

Our model is built through BasicSR's ``build_model`` from the shipped ``train_RCAN_SRx2_FAKD.yml`` (its loss blocks
as they are, tiny networks), the teacher loaded from a file in the official RCAN layout, the student's weights
converted by the ``rcan_official`` converter; both run in float64, as the reference step did. Their images are in
[0, 255] and ours in [0, 1], so every term and every gradient must be theirs divided by 255, within 1e-5 (relative
to the largest entry of each gradient).
"""
from os import path as osp

import pytest
import torch
from basicsr.models import build_model

import dckd_basicsr  # noqa: F401
from dckd_basicsr.checkpoints import load_pretrained
from dckd_basicsr.distill.feature_taps import FeatureRecorder
from dckd_basicsr.losses.fakd_loss import spatial_affinity
from dckd_basicsr.options import read_option_file

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
FIXTURE = osp.join(REPO, 'tests', 'data', 'golden', 'fakd_rcan_x2.pt')
SHIPPED = osp.join(REPO, 'options', 'train', 'RCAN', 'train_RCAN_SRx2_FAKD.yml')
RTOL = 1e-5


@pytest.fixture(scope='module')
def record():
    return torch.load(FIXTURE, weights_only=True)


def tiny_rcan(config, blocks):
    return dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=config['n_feats'], num_group=config['n_resgroups'],
                num_block=blocks, squeeze_factor=config['reduction'], upscale=config['scale'], res_scale=1,
                img_range=float(config['rgb_range']), rgb_mean=[0.4488, 0.4371, 0.4040])


def official_file(record, role, path):
    """Their weights under the names of the official RCAN release (what ``rcan_official`` reads)."""
    torch.save({record['name_map'][k]: v for k, v in record[role].items()}, path)
    return str(path)


def build_ours(tmp_path, record):
    config = record['config']
    opt = read_option_file(SHIPPED)
    for folder in ('models', 'states'):
        (tmp_path / folder).mkdir()
    opt.update(is_train=True, dist=False, num_gpu=0, rank=0, world_size=1, scale=config['scale'],
               network_g=tiny_rcan(config, config['student_blocks']),
               network_t=tiny_rcan(config, config['teacher_blocks']))
    opt['path'].update(models=str(tmp_path / 'models'), training_states=str(tmp_path / 'states'),
                       pretrain_network_t=official_file(record, 'teacher', tmp_path / 'teacher.pt'))
    model = build_model(opt)
    report = load_pretrained(model.net_g, official_file(record, 'student', tmp_path / 'student.pt'),
                             fmt='rcan_official', param_key=None, option='student')
    model.net_g.double()  # the reference step ran in float64; the optimizer keeps the same parameters
    model.net_t.double()
    theirs = {official: name for name, official in record['name_map'].items()}
    return model, {ours: theirs[official] for ours, official in report['mapped'].items()}


def relative_error(ours, reference):
    return ((ours - reference).abs().max() / reference.abs().max()).item()


def test_shipped_defaults_are_the_authors(record, tmp_path):
    model, _ = build_ours(tmp_path, record)
    assert model.fakd_pairs.student.layers == model.fakd_pairs.teacher.layers == ['body.2', 'body.6', 'upsample:input']
    assert record['config']['features'] == [1, 2, 3] and record['config']['alpha'] == 0.5
    assert record['config']['feature_distilation_type'] == '10*SA'
    assert model.cri_pix.loss_weight == model.cri_kd.loss_weight == 0.5  # 1 - alpha and alpha
    assert model.cri_fakd.loss_weight == pytest.approx(10 / 255, rel=1e-15)


def test_each_tap_gives_their_affinity_distance(record, tmp_path):
    model, _ = build_ours(tmp_path, record)
    lq = record['lr'].double() / 255
    recorders = [FeatureRecorder(net, model.fakd_pairs.student.layers, 'x') for net in (model.net_g, model.net_t)]
    model.fakd_pairs.student.enabled = model.fakd_pairs.teacher.enabled = False
    with torch.no_grad():
        model.net_g(lq)
        model.net_t(lq)
    for student, teacher, expected in zip(recorders[0].first(), recorders[1].first(), record['sa_per_tap']):
        distance = (spatial_affinity(student) - spatial_affinity(teacher)).abs().mean().item()
        assert distance == pytest.approx(expected, rel=RTOL)


def test_one_step_matches_their_terms_and_gradients(record, tmp_path):
    model, names = build_ours(tmp_path, record)
    model.feed_data({'lq': record['lr'].double() / 255, 'gt': record['hr'].double() / 255})
    model.optimize_parameters(1)
    theirs = {key: value / 255 for key, value in record['losses'].items()}
    terms = {'l_pix': 'DS', 'l_kd': 'TS', 'l_fakd': 'SA'}
    assert list(model.log_dict) == list(terms)
    for ours, their in terms.items():
        assert model.log_dict[ours] == pytest.approx(theirs[their], rel=RTOL), ours
    assert sum(model.log_dict.values()) == pytest.approx(theirs['Total'], rel=RTOL)
    params = dict(model.net_g.named_parameters())
    assert set(names) == set(params) and set(names.values()) == set(record['grads'])
    errors = {name: relative_error(params[name].grad, record['grads'][their] / 255) for name, their in names.items()}
    assert max(errors.values()) < RTOL, sorted(errors.items(), key=lambda item: -item[1])[:5]
