"""Every option file under options/: parses, names registered types; the SR rows of Table 2 come from the generator
and differ, within one backbone and scale, only in their method's keys; the deblurring/deraining files, the authors'
file and the demo templates. The networks of the shipped files have the sizes of Table 1."""
import glob
import re
from os import path as osp

import pytest
from basicsr.archs import build_network

from helpers import REPO, TABLE1, count_built, flatten, generator_module, load_option_file

import dckd_basicsr  # noqa: F401
from dckd_basicsr.errors import OptionError
from dckd_basicsr.integration.option_checks import check_option_types, schema_report
from dckd_basicsr.training.progressive import ProgressivePatchSchedule
from dckd_basicsr.commands.results import labels_from_name, labels_from_options

ALL_FILES = sorted(glob.glob(osp.join(REPO, 'options', '**', '*.yml'), recursive=True))
SR_METHODS = ('Scratch', 'Logits', 'FAKD', 'DUKD', 'DCKD', 'DCKDstar', 'DCKDEq9')
GROUPS = [(b, s) for b in ('SwinIR', 'RCAN') for s in (2, 3, 4)]
TABLE2_LABEL = {'Scratch': 'Scratch', 'Logits': 'Logits', 'FAKD': 'FAKD', 'DUKD': 'DUKD', 'DCKD': 'DCKD',
                'DCKDstar': 'DCKD*', 'DCKDEq9': 'DCKD (Eq. 9)'}
EFFICIENT = ('SPAN', 'SAFMN')  # spandrel students at x4, from the SwinIR-M x4 teacher
EFFICIENT_METHODS = ('Scratch', 'Logits', 'DCKD', 'DCKDstar')


def sr_file(backbone, scale, method):
    return osp.join(REPO, 'options', 'train', backbone, f'train_{backbone}_SRx{scale}_{method}.yml')


@pytest.mark.parametrize('path', ALL_FILES, ids=lambda p: osp.relpath(p, REPO))
def test_every_option_file_parses_and_names_registered_types(path):
    opt = load_option_file(path)
    assert opt.get('name') and opt.get('model_type'), path
    check_option_types(opt)  # raises UnknownTypeError naming the key


@pytest.mark.parametrize('backbone', ['SwinIR', 'RCAN', 'NAFNet', 'Restormer', 'SPAN', 'SAFMN'])
def test_option_files_are_ascii_with_short_lines(backbone):
    for path in glob.glob(osp.join(REPO, 'options', '*', backbone, '*.yml')):
        with open(path, 'rb') as f:
            for number, line in enumerate(f, 1):
                assert re.fullmatch(rb'[\x20-\x7e]*\n?', line), f'{path}:{number}'
                assert len(line.rstrip(b'\n')) <= 120, f'{path}:{number}'


def test_generator_reproduces_the_committed_files_byte_for_byte():
    module = generator_module()
    files = module.all_files()
    efficient = len(EFFICIENT) * (len(EFFICIENT_METHODS) + 1)  # x4 rows and the SpandrelTeacher DCKD*
    assert len(files) == (2 * 3 * len(SR_METHODS) + efficient) * 2  # train and test file per row
    for relative, text in files:
        with open(osp.join(REPO, 'options', relative)) as f:
            assert f.read() == text, f'options/{relative} differs: run python options/generate_sr_options.py'
    generated = {osp.join(REPO, 'options', relative) for relative, _ in files}
    on_disk = {path for backbone in ('SwinIR', 'RCAN') + EFFICIENT
               for path in glob.glob(osp.join(REPO, 'options', '*', backbone, '*.yml'))}
    assert on_disk - generated == {osp.join(REPO, 'options/train/SwinIR/train_SwinIR_SRx4_DCKD_authors.yml')}
    assert module.main(['--check']) == 0


TEACHER = ({'path.pretrain_network_t', 'path.param_key_t', 'path.strict_load_t'}, ('network_t.', 'train.logits_opt.'))
FAKD = ({'train.pixel_opt.loss_weight', 'train.logits_opt.loss_weight'}, ('train.fakd_opt.', ))  # alpha 0.5
DUKD = ({'train.dukd_opt.n_gt_sub', 'train.dukd_opt.zoom_out', 'train.scheduler.milestones'},
        ('train.noisy.', 'train.pixel_opt.'))
# DUKD authors' files (their options/{Swinir,RCAN}/dukd_*.yml): pixel_opt weight, noisy.prob (None: no `noisy`),
# dukd_opt.zoom_out; n_gt_sub [1] and milestones [1e5, 2e5] in all of them
DUKD_FILES = {**{('SwinIR', s): (5.0, 0.3, False) for s in (2, 3, 4)},
              ('RCAN', 2): (1.0, None, False), ('RCAN', 3): (2.0, 0.3, True), ('RCAN', 4): (1.0, 0.0, False)}
DCKD = ({'network_his', 'path.pretrain_network_vqgan', 'path.param_key_vqgan', 'path.strict_load_vqgan',
         'train.num_neg', 'train.update_decay', 'train.step', 'train.gaussian_noise_prob', 'train.gray_noise_prob',
         'train.gaussian_blur_prob', 'train.resize_prob'}, ('network_vqgan.', 'train.cl_opt.', 'train.ce_opt.'))


def _changed(a, b):
    return {k for k in set(a) | set(b) if a.get(k, object()) != b.get(k, object())} - {'name'}


def _only(keys, *allowed):
    exact = set().union(*(a[0] for a in allowed))
    prefixes = sum((a[1] for a in allowed), ())
    return {k for k in keys if k not in exact and not k.startswith(prefixes)}


@pytest.mark.parametrize('backbone,scale', GROUPS)
def test_methods_of_a_group_differ_only_in_their_keys(backbone, scale):
    rows = {m: flatten(load_option_file(sr_file(backbone, scale, m))) for m in SR_METHODS}
    scratch_model = 'SwinIRModel' if backbone == 'SwinIR' else 'SRModel'
    assert [rows[m]['model_type'] for m in SR_METHODS] == ([scratch_model] + ['KDModel'] * 2 + ['DUKDModel'] +
                                                           ['DCKDModel'] * 3)
    diff = _changed(rows['Scratch'], rows['Logits']) - {'model_type'}
    assert not _only(diff, TEACHER) and TEACHER[0] <= diff and 'train.logits_opt.type' in diff
    for method, allowed, must in (('FAKD', FAKD, 'train.fakd_opt.type'), ('DUKD', DUKD, 'train.dukd_opt.n_gt_sub'),
                                  ('DCKD', DCKD, 'train.cl_opt.type')):
        diff = _changed(rows['Logits'], rows[method]) - {'model_type'}
        assert not _only(diff, allowed), (method, _only(diff, allowed))
        assert must in diff and allowed[0] <= diff
    dukd = rows['DUKD']
    assert (dukd['train.pixel_opt.loss_weight'], dukd.get('train.noisy.prob'),
            dukd['train.dukd_opt.zoom_out']) == DUKD_FILES[(backbone, scale)]
    assert (dukd['train.dukd_opt.n_gt_sub'], dukd['train.scheduler.milestones']) == ([1], [100000, 200000])
    # DCKD* adds the authors' label consistency to DCKD; DCKD (Eq. 9) swaps their CELoss for Eq. 9
    assert _changed(rows['DCKD'], rows['DCKDstar']) == {'train.lcr_opt.type', 'train.lcr_opt.loss_weight',
                                                         'train.lcr_opt.reduction', 'train.noisy.prob'}
    assert (rows['DCKD']['train.ce_opt.type'], rows['DCKDEq9']['train.ce_opt.type']) == ('CELoss',
                                                                                         'DistributionMappingLoss')
    assert _changed(rows['DCKD'], rows['DCKDEq9']) == {'train.ce_opt.type', 'train.ce_opt.reduction'}
    # names are what dckd_basicsr.commands.results parses, and the loss blocks say the same
    for method, row in rows.items():
        assert row['name'] == f'{backbone}_SRx{scale}_{method}'
        labels = labels_from_name(row['name'])
        assert (labels['backbone'], labels['scale'], labels['method']) == (backbone, scale, TABLE2_LABEL[method])
        if method != 'Scratch' or backbone == 'RCAN':
            from_options = labels_from_options(load_option_file(sr_file(backbone, scale, method)))
            assert from_options['method'] == TABLE2_LABEL[method]


@pytest.mark.parametrize('backbone,scale', GROUPS)
def test_paper_settings_and_layout(backbone, scale):
    opt = load_option_file(sr_file(backbone, scale, 'DCKDstar'))
    train_set = opt['datasets']['train']
    assert train_set['dataroot_gt'] == 'datasets/DIV2K/DIV2K_train_HR_sub.lmdb'
    assert train_set['dataroot_lq'] == f'datasets/DIV2K/DIV2K_train_LR_bicubic_X{scale}_sub.lmdb'
    assert (train_set['gt_size'], train_set['batch_size_per_gpu'], train_set['use_rot']) == (48 * scale, 16, True)
    # the authors' shared settings: seed, data loading, schedule, validation sets
    assert (opt['manual_seed'], train_set['dataset_enlarge_ratio'], train_set['num_worker_per_gpu']) == (10, 100, 8)
    assert opt['train']['scheduler'] == {'type': 'MultiStepLR', 'milestones': [250000], 'gamma': 0.1}
    val_sets = [opt['datasets'][f'val_{i}'] for i in (1, 2, 3)]
    assert [v['name'] for v in val_sets] == ['Set5', 'Set14', 'Urban100']
    assert val_sets[0]['dataroot_lq'] == f'datasets/Benchmark_SR/Set5/LR_bicubic/X{scale}'
    assert val_sets[0]['filename_tmpl'] == f'{{}}x{scale}'
    assert opt['val'].get('window_size') == opt['network_g'].get('window_size')
    assert (opt['train']['ce_opt']['type'], opt['train']['lcr_opt']['type']) == ('CELoss', 'L1Loss')
    assert all(m['crop_border'] == scale and m['test_y_channel'] for m in opt['val']['metrics'].values())
    train = opt['train']
    assert (train['optim_g']['type'], train['optim_g']['lr'], train['optim_g']['betas']) == ('Adam', 1e-4, [0.9, 0.99])
    assert (train['total_iter'], train['ema_decay']) == (250000, 0.999)
    assert (train['cl_opt']['loss_weight'], train['ce_opt']['loss_weight']) == (0.1, 0.001)
    assert train['cl_opt']['weights'] == [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1]
    assert (train['num_neg'], train['update_decay'], train['step']) == (4, 0.1, [1000, 2000, 3000])
    assert opt['path']['pretrain_network_t'].startswith(f'experiments/pretrained_models/{backbone}/')
    if backbone == 'SwinIR':  # the teacher the DCKD authors distil from (Table 2's teacher row)
        assert opt['path']['pretrain_network_t'].endswith(f'001_classicalSR_DIV2K_s48w8_SwinIR-M_x{scale}.pth')
        assert (opt['network_t']['img_size'], opt['network_t']['window_size']) == (48, 8)
    assert f'x{scale}' in opt['path']['pretrain_network_t'].lower()
    assert opt['network_g']['upscale'] == opt['network_t']['upscale'] == scale
    test = load_option_file(osp.join(REPO, 'options', 'test', backbone, f'test_{backbone}_SRx{scale}_DCKD.yml'))
    assert [d['name'] for d in test['datasets'].values()] == ['Set5', 'Set14', 'B100', 'Urban100', 'Manga109']
    assert test['network_g'] == opt['network_g']
    assert test['path']['pretrain_network_g'] == f'experiments/{backbone}_SRx{scale}_DCKD/models/net_g_latest.pth'


@pytest.mark.parametrize('backbone', ['SwinIR', 'RCAN'])
def test_x4_networks_have_table1_sizes(backbone):
    opt = load_option_file(sr_file(backbone, 4, 'Logits'))
    for key, role in (('network_g', 'student'), ('network_t', 'teacher')):
        assert count_built(dict(opt[key])) == TABLE1[(backbone, role)][2], key


@pytest.mark.parametrize('student, params', [('SPAN', 1840488), ('SAFMN', 239520)])
def test_efficient_students_differ_from_the_swinir_x4_rows_only_in_the_student(student, params):
    """SPAN (its 48-channel release; 426,288 parameters once its convolutions are fused, 1,840,488 while
    training) and SAFMN (its x4 release) take every other value of the paper's SwinIR x4 row, teacher included;
    their SpandrelTeacher DCKD* differs from DCKD* in the teacher only."""
    from dckd_basicsr.archs.spandrel_students_arch import check_network_options
    for method in EFFICIENT_METHODS:
        opt = load_option_file(sr_file(student, 4, method))
        ours, paper = flatten(opt), flatten(load_option_file(sr_file('SwinIR', 4, method)))
        assert {k for k in _changed(paper, ours) if not k.startswith('network_g.')} <= {'model_type', 'val.window_size'}
        assert ours['network_g.type'] == student and count_built(dict(opt['network_g'])) == params
        assert ours['model_type'] == ('SRModel' if method == 'Scratch' else paper['model_type'])
        check_network_options(opt)
        labels = labels_from_name(ours['name'])
        assert (labels['scale'], labels['method']) == (4, TABLE2_LABEL[method])
    variant = flatten(load_option_file(sr_file(student, 4, 'DCKDstar_SpandrelTeacher')))
    changed = _changed(flatten(load_option_file(sr_file(student, 4, 'DCKDstar'))), variant)
    assert not _only(changed, ({'path.pretrain_network_t', 'path.param_key_t'}, ('network_t.', )))
    assert (variant['network_t.type'], variant['path.pretrain_network_t']) == (
        'SpandrelTeacher', 'experiments/pretrained_models/HAT/HAT-L_SRx4_ImageNet-pretrain.pth')


# ---------------------------------------------------------------- deblurring and deraining (NAFNet, Restormer)
OPTION_FILES = sorted(glob.glob(osp.join(REPO, 'options', 'train', 'NAFNet', '*.yml')) +
                      glob.glob(osp.join(REPO, 'options', 'train', 'Restormer', '*.yml')))


def test_option_files_exist():
    names = sorted(osp.basename(p) for p in OPTION_FILES)
    assert names == sorted(f'train_{b}_{t}_{m}.yml' for b, t in [('NAFNet', 'Deblur'), ('Restormer', 'Deblur'),
                                                                  ('Restormer', 'Derain')]
                           for m in ('Scratch', 'Logits', 'DCKD'))


@pytest.mark.parametrize('path', OPTION_FILES, ids=osp.basename)
def test_option_file_networks_match_table1(path):
    opt = load_option_file(path)
    backbone = osp.basename(path).split('_')[1]
    assert opt['name'] == osp.splitext(osp.basename(path))[0][len('train_'):]
    assert opt['scale'] == 1
    for key, role in (('network_g', 'student'), ('network_t', 'teacher')):
        if key in opt:
            assert count_built(dict(opt[key])) == TABLE1[(backbone, role)][2], key
    y_channel = 'Derain' in path
    for metric in opt['val']['metrics'].values():
        assert metric['test_y_channel'] is y_channel and metric['crop_border'] == 0
    assert opt['train']['optim_g']['type'] == 'AdamW'
    schedule = ProgressivePatchSchedule.from_options(opt)
    if backbone == 'Restormer':
        assert schedule.ends == [92000, 156000, 204000, 240000, 276000, 300000]
        assert opt['train']['total_iter'] == 300000
        assert opt['train']['optim_g']['lr'] == 3e-4 and opt['train']['optim_g']['betas'] == [0.9, 0.999]
    else:
        assert schedule is None and opt['datasets']['train']['gt_size'] == 256
        assert opt['train']['total_iter'] == 200000
        assert opt['train']['optim_g']['lr'] == 1e-3 and opt['train']['optim_g']['betas'] == [0.9, 0.9]
    if 'Derain' in path:
        assert [d['name'] for k, d in opt['datasets'].items() if k.startswith('val')] == [
            'Test100', 'Rain100H', 'Rain100L', 'Test2800', 'Test1200']


@pytest.mark.parametrize('group', ['NAFNet_Deblur', 'Restormer_Deblur', 'Restormer_Derain'])
def test_methods_differ_only_in_method_keys(group):
    folder = osp.join(REPO, 'options', 'train', group.split('_')[0])
    scratch, logits, dckd = (flatten(load_option_file(osp.join(folder, f'train_{group}_{m}.yml')))
                             for m in ('Scratch', 'Logits', 'DCKD'))

    assert scratch['model_type'] == 'SRModel' and logits['model_type'] == dckd['model_type'] == 'DCKDModel'
    kd_keys = _changed(scratch, logits) - {'model_type'}
    assert kd_keys and not _only(kd_keys, TEACHER) and TEACHER[0] <= kd_keys
    dckd_keys = _changed(logits, dckd)
    assert not _only(dckd_keys, DCKD) and DCKD[0] <= dckd_keys
    # the authors' DCKD values
    assert dckd['train.cl_opt.type'] == 'ContrasLoss' and dckd['train.cl_opt.loss_weight'] == 0.1
    assert dckd['train.cl_opt.weights'] == [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1]
    assert dckd['train.ce_opt.type'] == 'CELoss' and dckd['train.ce_opt.loss_weight'] == 0.001
    assert (dckd['train.num_neg'], dckd['train.update_decay'], dckd['train.step']) == (4, 0.1, [1000, 2000, 3000])
    assert dckd['network_vqgan.type'] == 'VQGAN' and dckd['network_vqgan.n_embed'] == 1024
    assert dckd['network_vqgan.ddconfig.ch_mult'] == [1, 1, 2, 2, 4]
    assert dckd['path.param_key_vqgan'] == 'state_dict' and dckd['path.strict_load_vqgan'] is False


# ---------------------------------------------------------------- the authors' SwinIR x4 file
AUTHORS_FILE = osp.join(REPO, 'options/train/SwinIR/train_SwinIR_SRx4_DCKD_authors.yml')
AUTHORS_VALUES = osp.join(REPO, 'tests/data/authors/train_SwinIR_SRx4_DCKD.values.yml')
# Where the data and the checkpoints lie, and how the training set is stored (the LMDBs of datasets_prep/ instead of
# the authors' sub-image folders): the only keys allowed to differ from the authors' file.
LOCAL_KEYS = {'datasets.train.dataroot_gt', 'datasets.train.dataroot_lq', 'datasets.train.meta_info_file',
              'datasets.train.filename_tmpl', 'datasets.train.io_backend.type', 'path.pretrain_network_t',
              'path.pretrain_network_vqgan'}


def test_authors_file_has_the_authors_values_except_local_paths():
    ours, theirs = flatten(load_option_file(AUTHORS_FILE)), flatten(load_option_file(AUTHORS_VALUES))
    differences = {key: (ours.get(key, '<missing>'), theirs.get(key, '<missing>'))
                   for key in (set(ours) | set(theirs)) - LOCAL_KEYS if ours.get(key, object()) != theirs.get(key)}
    assert not differences, f'keys differing from the authors\' file (ours, theirs): {differences}'
    assert osp.basename(ours['path.pretrain_network_t']) == osp.basename(theirs['path.pretrain_network_t'])


def _authors_options(**train_updates):
    opt = load_option_file(AUTHORS_FILE)
    opt['train'].update(train_updates)
    return opt


@pytest.mark.parametrize('block,key', [('cl_opt', 'reduction'), ('cl_opt', 'weigths'), ('ce_opt', 'temperature'),
                                       ('pixel_opt', 'loss_weigth')])
def test_an_option_key_the_type_does_not_have_is_an_error_naming_it(block, key):
    from dckd_basicsr.integration.option_checks import check_option_keys
    opt = _authors_options()
    opt['train'][block][key] = 'sum'
    with pytest.raises(OptionError, match=rf'^train\.{block}\.{key}: \w+ has no option {key!r}; it accepts '):
        check_option_keys(opt)


def test_keys_a_model_reads_from_a_loss_block_come_from_its_loss_table():
    """FAKD's layer names are read by KDModel (LOSS_TERMS' model_keys), not by FAKDLoss: accepted there only."""
    from dckd_basicsr.integration.option_checks import check_option_keys
    opt = load_option_file(osp.join(REPO, 'options/train/RCAN/train_RCAN_SRx4_FAKD.yml'))
    opt['train']['fakd_opt'].update(student_layers=['body.2'], teacher_layers=['body.6'])
    check_option_keys(opt)
    opt['model_type'] = 'SRModel'  # SRModel reads no fakd_opt at all: the block is refused, naming its readers
    assert schema_report(opt).errors == [f'{key}: SRModel does not read this key (KDModel does); use one of those '
                                         'model_type values or remove it.' for key in ('network_t', 'train.logits_opt',
                                                                                   'train.fakd_opt')]
    opt['model_type'] = 'KDModel'
    opt['train']['fakd_opt']['student_layer'] = ['body.2']  # misspelt
    with pytest.raises(OptionError, match=r"^train\.fakd_opt\.student_layer: FAKDLoss has no option"):
        check_option_keys(opt)


def test_the_reference_types_keys_are_accepted_and_unhonourable_values_refused():
    from basicsr.losses import build_loss
    from dckd_basicsr.integration.option_checks import check_option_keys
    opt = _authors_options()
    # taming's full ddconfig (decoder-only keys included) and the authors' `reduction: mean` of CELoss
    opt['network_vqgan']['ddconfig'].update(give_pre_end=False, resamp_with_conv=True)
    check_option_keys(opt)
    build_network(dict(opt['network_vqgan'], ddconfig=dict(opt['network_vqgan']['ddconfig'], ch=32, ch_mult=[1, 2])))
    build_loss(dict(opt['train']['ce_opt']))
    with pytest.raises(OptionError, match=r"train\.ce_opt\.reduction: 'sum'.*only 'mean'"):
        build_loss(dict(opt['train']['ce_opt'], reduction='sum'))
    with pytest.raises(OptionError, match=r'network_vqgan\.ddconfig\.chmult: .*ch_mult'):
        build_network(dict(opt['network_vqgan'], ddconfig=dict(opt['network_vqgan']['ddconfig'], chmult=[1])))
    with pytest.raises(OptionError, match=r'network_vqgan\.ddconfig\.resamp_with_conv: False'):
        build_network(dict(opt['network_vqgan'], ddconfig=dict(opt['network_vqgan']['ddconfig'],
                                                               resamp_with_conv=False)))


# ---------------------------------------------------------------- the demo's templates (options/demo)
def test_demo_templates_differ_only_in_the_method_keys():
    from dckd_basicsr.commands import demo
    scratch, logits, dckd = (demo.load_template(f'student_{m}') for m in demo.METHODS)
    for opt in (scratch, logits, dckd):
        opt.pop('name')
    assert set(logits) - set(scratch) == {'network_t'}
    assert set(dckd) - set(logits) == {'network_his', 'network_vqgan'}
    assert set(dckd['train']) - set(logits['train']) == {'cl_opt', 'ce_opt', 'num_neg', 'update_decay', 'step',
                                                          'gaussian_noise_prob', 'gray_noise_prob',
                                                          'gaussian_blur_prob', 'resize_prob'}
    assert set(logits['train']) - set(scratch['train']) == {'logits_opt'}
    assert scratch['network_g'] == logits['network_g'] == dckd['network_g']
    assert scratch['datasets'] == logits['datasets'] == dckd['datasets']
