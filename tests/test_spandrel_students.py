"""spandrel's trainable archs as BasicSR archs (``dckd_basicsr/archs/spandrel_students_arch.py``): the per-arch
battery (trains every used parameter, EMA and history copies valid, save/strict load exact, train = eval where the
arch branches on ``self.training``, bf16 trains or is refused, resume exact), the naming rule, the option checks and
their messages. Tiny networks: the ``spandrel_*`` blocks of ``tests/data/tiny_networks.yml``.

The quick set runs the battery on every registered arch; the slow set runs bitwise resume on the archs of
:data:`RESUMED` (SPAN, quick, and one per fix of the wrapper), one ``dckd-train`` run with a SPAN student end to end
(resumed, then exported for spandrel) and the smoke runs of two shipped option files."""
import copy
from pathlib import Path

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY
from torch.nn import functional as F

from helpers import BIN, REPO, dckd_train_options, kd_options, make_pairs, run, tiny_network, write_checkpoints

import dckd_basicsr  # noqa: F401  (registers the archs)
from dckd_basicsr.archs import spandrel_students_arch as students
from dckd_basicsr.archs.spandrel_students_arch import REGISTERED, check_network_options, check_precision
from dckd_basicsr.distill.feature_taps import FAKD_DEPTHS, FeatureRecorder, default_feature_layers, stage_at
from dckd_basicsr.errors import OptionError, UnknownTypeError
from dckd_basicsr.integration.option_checks import check_option_keys

# Archs whose tiny DCKD steps on two images take over about half a second (large minimum input sizes): the battery
# trains them on one image.
HEAVY = {'CRAFT', 'SCUNet', 'Uformer', 'UpCunet2x', 'UpCunet2x_fast', 'UpCunet3x', 'UpCunet4x', 'KBNet_l', 'KBNet_s',
         'MixDehazeNet'}
# Archs with branches on self.training that compute the same function (SPAN re-parameterises its convolutions).
SAME_IN_TRAIN_AND_EVAL = ('SPAN', 'PLKSR', 'RealPLKSR')
# The slow bitwise-resume runs: SPAN (quick) and one arch per wrapper fix: RCAN's input copy, and the frozen unused
# parameters of FDAT (half of each interaction module), SwiftSRGAN (activations of blocks without one) and HVICIDNet (a
# submodule whose output the forward overwrites; it also pads to a multiple of 8).
RESUMED = ('SPAN', 'SpandrelRCAN', 'FDAT', 'SwiftSRGAN', 'HVICIDNet')


def archs(quick=None, names=sorted(REGISTERED)):
    """``names``, every one in the quick set, or only ``quick`` (the others marked slow)."""
    slow = set() if quick is None else set(REGISTERED) - set(quick)
    return [pytest.param(name, marks=pytest.mark.slow) if name in slow else name for name in names]


def tiny(name: str) -> dict:
    """The tiny block of a registered name: ``spandrel_<spandrel's name>``."""
    return tiny_network(f'spandrel_{REGISTERED[name].name}')


def scale_of(name: str) -> int:
    return students.network_scale(REGISTERED[name], tiny(name))


def lq_size(name: str) -> int:
    """The smallest LQ side from 16 up that meets the arch's size requirements (no padding inside the student)."""
    arch = REGISTERED[name]
    minimum, multiple, _ = arch.size_requirements(students.option_values(arch, tiny(name)))
    size = max(16, minimum)
    return -(-size // multiple) * multiple


def batch(name: str, seed: int) -> dict:
    """Two LQ/GT pairs (one for the HEAVY archs) of the smallest size that needs no padding."""
    size, scale, images = lq_size(name), scale_of(name), 1 if name in HEAVY else 2
    generator = torch.Generator().manual_seed(seed)
    return {'lq': torch.rand(images, 3, size, size, generator=generator),
            'gt': torch.rand(images, 3, size * scale, size * scale, generator=generator)}


def dckd_options(root: Path, name: str, **train) -> dict:
    """DCKD (logits KD, Eq. 5, DMM) with the tiny ``name`` student, a tiny teacher of its scale, EMA 0.5 and a
    history update at every iteration."""
    scale = scale_of(name)
    teacher = tiny_network('msrresnet_teacher', upscale=scale) if scale > 1 else dict(tiny('SpandrelNAFNet'), width=16)
    opt = kd_options(root, tiny(name), teacher, model_type='DCKDModel')
    opt['scale'] = scale
    opt['train'].update(logits_opt=dict(type='L1Loss'), ce_opt=dict(type='CELoss', loss_weight=0.001),
                        cl_opt=dict(type='ContrasLoss', d_func='L1', loss_weight=0.1, weights=[0.25, 0.5, 1.0]),
                        num_neg=2, update_decay=0.1, step=[1], gaussian_noise_prob=1, gray_noise_prob=0.5, **train)
    (root / 'frozen').mkdir()
    files = write_checkpoints(root / 'frozen')
    opt.update(network_his=True, network_vqgan=tiny_network('vqgan'))
    opt['path'].update(pretrain_network_vqgan=files['vqgan'], param_key_vqgan='state_dict', strict_load_vqgan=False)
    return opt


def train(model, name: str, iters) -> dict:
    """Train ``iters``; ``{parameter name: whether a gradient reached it that Adam turns into a visible step}`` for
    the parameters that got a gradient (a gradient under 1e-9 moves a weight by less than float32 resolves)."""
    grads = {}
    for current_iter in iters:
        model.feed_data(batch(name, current_iter))
        model.optimize_parameters(current_iter)
        model.update_learning_rate(current_iter, warmup_iter=-1)
        for key, param in model.net_g.named_parameters():
            if param.grad is not None:
                grads[key] = grads.get(key, False) or bool(param.grad.abs().max() > 1e-9)
    return grads


def eval_output(net, x):
    was_training = net.training
    net.eval()
    with torch.no_grad():
        out = net(x)
    net.train(was_training)
    return out


def rebuilt(net_opt: dict, state: dict):
    """A fresh network of ``net_opt`` given ``state`` with a strict load, as the EMA and history copies are made."""
    net = build_network(copy.deepcopy(net_opt))
    net.load_state_dict(state, strict=True)
    return net


# ---------------------------------------------------------------------------------------------- names and detection
def test_names_follow_the_rule():
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from basicsr.archs.swinir_arch import SwinIR
    from spandrel.architectures.SwinIR import SwinIR as SpandrelsSwinIR

    from dckd_basicsr.archs.nafnet_arch import NAFNet
    assert {'SpandrelSwinIR', 'SpandrelRCAN', 'SpandrelNAFNet'} <= set(REGISTERED)
    assert ARCH_REGISTRY.get('SwinIR') is SwinIR and ARCH_REGISTRY.get('NAFNet') is NAFNet
    assert issubclass(ARCH_REGISTRY.get('SpandrelSwinIR'), SpandrelsSwinIR)
    assert ARCH_REGISTRY.get('RRDBNet') is RRDBNet and 'ESRGAN' in REGISTERED and 'Compact' in REGISTERED
    assert students.registered_name('SPAN', taken={'SwinIR'}) == 'SPAN'
    assert students.registered_name('SwinIR', taken={'SwinIR'}) == 'SpandrelSwinIR'
    for name, arch in REGISTERED.items():
        assert issubclass(ARCH_REGISTRY.get(name), arch.network_class)
        assert name == students.registered_name(arch.name, taken=set(ARCH_REGISTRY.keys()) - set(REGISTERED))


@pytest.mark.parametrize('name', sorted(REGISTERED))
def test_spandrel_detects_the_arch_scale_precisions_and_size_we_record(name):
    """What the table says of each arch is what spandrel's own loader says of the network we build."""
    from spandrel import ModelLoader
    arch, net_opt = REGISTERED[name], tiny(name)
    descriptor = ModelLoader().load_from_state_dict(build_network(copy.deepcopy(net_opt)).state_dict())
    values = students.option_values(arch, net_opt)
    assert isinstance(descriptor.model, arch.network_class)
    assert descriptor.scale == scale_of(name)
    assert descriptor.supports_half == (arch.fp16 or bool(arch.fp16_needs and values.get(arch.fp16_needs)))
    assert descriptor.supports_bfloat16 == arch.bf16
    req = descriptor.size_requirements
    assert (req.minimum, req.multiple_of, req.square) == arch.size_requirements(values)


@pytest.mark.parametrize('name', archs())
def test_the_wrapper_computes_spandrels_function_and_takes_any_size(name):
    """On an input that meets the size requirements the registered class gives the output of spandrel's own class
    with the same weights; any other size is padded and cropped back to ``scale`` times the input."""
    arch, net_opt = REGISTERED[name], tiny(name)
    net = build_network(copy.deepcopy(net_opt)).eval()
    raw = arch.network_class(**{k: v for k, v in net_opt.items() if k != 'type'}).eval()
    raw.load_state_dict(net.state_dict())
    x = batch(name, 3)['lq']
    with torch.no_grad():
        assert torch.equal(net(x), raw(x.clone()))
        odd = net(torch.rand(1, 3, 21, 19))
    assert odd.shape[-2:] == (21 * scale_of(name), 19 * scale_of(name))


# ---------------------------------------------------------------------------------------------- the battery
@pytest.mark.parametrize('name', archs())
def test_dckd_trains_every_used_parameter_and_its_copies_stay_valid(tmp_path, name):
    opt = dckd_options(tmp_path, name)
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(opt))
    before = {k: v.detach().clone() for k, v in model.net_g.named_parameters()}
    grads = train(model, name, (1, 2))
    frozen = {k for k, v in model.net_g.named_parameters() if not v.requires_grad}
    unused = REGISTERED[name].unused
    assert frozen == ({k for k, v in model.net_g.named_parameters() if any(v is p for p in unused(model.net_g))}
                      if unused else set())
    assert set(before) - set(grads) == frozen  # every other parameter is reached by the loss
    moved = {k for k, v in model.net_g.named_parameters() if not torch.equal(v.detach(), before[k])}
    assert {k for k, nonzero in grads.items() if nonzero} <= moved
    for net_name in ('net_g', 'net_g_ema', 'net_his'):
        state = getattr(model, net_name).state_dict()
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), net_name
    x = batch(name, 9)['lq']
    for copy_net in (model.net_g_ema, model.net_his):  # EMA and history: the eval outputs of a fresh copy
        out, fresh = eval_output(copy_net, x), eval_output(rebuilt(opt['network_g'], copy_net.state_dict()), x)
        assert torch.allclose(out, fresh, rtol=0, atol=1e-6 * float(fresh.abs().max()))
    model.save_network([model.net_g, model.net_g_ema], 'net_g', 2, param_key=['params', 'params_ema'])
    for key, net in (('params', model.net_g), ('params_ema', model.net_g_ema)):
        loaded = build_network(copy.deepcopy(opt['network_g']))
        model.load_network(loaded, str(tmp_path / 'models/net_g_2.pth'), strict=True, param_key=key)
        saved, again = net.state_dict(), loaded.state_dict()
        assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved), key


@pytest.mark.parametrize('name', archs())
def test_sr_model_step_trains_the_student(tmp_path, name):
    opt = dckd_options(tmp_path, name)
    opt['model_type'] = 'SRModel'
    for key in ('network_t', 'network_his', 'network_vqgan'):
        del opt[key]
    for key in ('logits_opt', 'ce_opt', 'cl_opt'):
        del opt['train'][key]
    torch.manual_seed(0)
    model = build_model(opt)
    before = {k: v.detach().clone() for k, v in model.net_g.named_parameters()}
    grads = train(model, name, (1, ))
    moved = {k for k, v in model.net_g.named_parameters() if not torch.equal(v.detach(), before[k])}
    assert moved and {k for k, nonzero in grads.items() if nonzero} <= moved
    assert all(torch.isfinite(v).all() for v in model.net_g.parameters())


@pytest.mark.parametrize('model_type', ['KDModel', 'DUKDModel'])
def test_spandrel_archs_as_student_and_teacher_of_the_other_models(tmp_path, model_type):
    """A SAFMN student distilled from a SPAN teacher (``network_t: {type: SPAN, ...}``, a BasicSR checkpoint)."""
    opt = kd_options(tmp_path, tiny('SAFMN'), dict(tiny('SPAN'), feature_channels=16), model_type=model_type,
                     logits_opt=dict(type='L1Loss'))
    if model_type == 'DUKDModel':
        opt['train']['dukd_opt'] = {'n_gt_sub': [1], 'zoom_out': True}
    model = build_model(opt)
    before = {k: v.detach().clone() for k, v in model.net_g.named_parameters()}
    train(model, 'SAFMN', (1, 2))
    assert all(not torch.equal(v.detach(), before[k]) for k, v in model.net_g.named_parameters())
    assert all(torch.isfinite(v).all() for v in model.net_g.parameters())


@pytest.mark.parametrize('name', SAME_IN_TRAIN_AND_EVAL)
def test_train_and_eval_outputs_agree_after_steps(tmp_path, name):
    model = build_model(dckd_options(tmp_path, name))
    train(model, name, (1, 2))
    x = batch(name, 9)['lq']
    with torch.no_grad():
        trained = model.net_g(x)
    evaluated = eval_output(model.net_g, x)
    assert torch.allclose(evaluated, trained, rtol=0, atol=1e-5 * float(trained.abs().max()))


def test_span_saves_the_fusion_of_its_current_branches(tmp_path):
    """SPAN's fused eval convolutions are buffers refreshed by ``state_dict()``: a consumer that runs ``eval_conv``
    without re-fusing (traiNNer-redux's SPAN fuses once, on ``eval()``) gets the trained function, and a copy made
    by ``load_state_dict`` after more steps is not stale."""
    model = build_model(dckd_options(tmp_path, 'SPAN'))
    net = model.net_g
    assert not any('eval_conv' in key for key, _ in net.named_parameters())
    history = rebuilt(model.opt['network_g'], net.state_dict()).eval()
    train(model, 'SPAN', (1, 2))
    x = batch('SPAN', 9)['lq'] * 255  # the normalised range conv_1 sees
    state = net.state_dict()
    with torch.no_grad():
        branches = net.conv_1(x)
        fused = F.conv2d(x, state['conv_1.eval_conv.weight'], state['conv_1.eval_conv.bias'], padding=1)
        history.load_state_dict(state)
        copied = history(x / 255)
        trained = net(x / 255)
    assert torch.allclose(fused, branches, rtol=0, atol=1e-5 * float(branches.abs().max()))
    assert torch.allclose(copied, trained, rtol=0, atol=1e-5 * float(trained.abs().max()))


@pytest.mark.parametrize('name', archs())
def test_bf16_trains_or_is_refused_in_one_line(tmp_path, name):
    net_opt = tiny(name)
    try:
        check_precision(net_opt, 'bf16')
    except OptionError as error:
        message = str(error)
        assert '\n' not in message and name in message and 'train.fast.amp: bf16' in message
        return
    opt = dckd_options(tmp_path, name, fast=dict(amp='bf16'))
    opt['model_type'] = 'KDModel'  # logits KD: the student's forward and backward under bf16 autocast, no encoder
    for key in ('network_his', 'network_vqgan'):
        del opt[key]
    for key in ('ce_opt', 'cl_opt'):
        del opt['train'][key]
    model = build_model(opt)
    before = {k: v.detach().clone() for k, v in model.net_g.named_parameters()}
    train(model, name, (1, 2))
    assert any(not torch.equal(v.detach(), before[k]) for k, v in model.net_g.named_parameters())
    assert all(torch.isfinite(v).all() for v in model.net_g.state_dict().values() if v.is_floating_point())


def test_kbnet_s_fails_under_bf16_autocast_as_recorded():
    """The reason KBNet_s is refused bf16 although spandrel allows it."""
    net = build_network(tiny('KBNet_s'))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = net(torch.rand(2, 3, 16, 16))
    with pytest.raises(RuntimeError, match='same dtype'):
        out.float().mean().backward()


@pytest.mark.parametrize('name', archs(quick=('SPAN', ), names=RESUMED))
def test_resumed_training_continues_bitwise(tmp_path, name):
    from basicsr.utils.misc import check_resume
    opt = dckd_options(tmp_path, name)
    torch.manual_seed(0)
    uninterrupted = build_model(copy.deepcopy(opt))
    train(uninterrupted, name, (1, 2))
    uninterrupted.save(0, 2)
    train(uninterrupted, name, (3, 4))
    opt['path']['resume_state'] = f"{opt['path']['training_states']}/2.state"
    check_resume(opt, 2)
    resumed = build_model(opt)
    resumed.resume_training(torch.load(opt['path']['resume_state'], weights_only=True))
    train(resumed, name, (3, 4))
    for net_name in ('net_g', 'net_g_ema', 'net_his'):
        a, b = getattr(uninterrupted, net_name).state_dict(), getattr(resumed, net_name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), net_name


@pytest.mark.slow
def test_dckd_train_with_a_span_student_resumes_exactly(tmp_path):
    """``dckd-train`` end to end: a SPAN student stopped after two iterations and restarted with --auto_resume ends
    with the weights of an uninterrupted three-iteration run; ``dckd-export --to spandrel`` of the run's checkpoint
    and option file opens with ``spandrel.ModelLoader().load_from_file`` as that SPAN."""
    data = make_pairs(tmp_path / 'data', count=2, size=32)
    opt = dckd_train_options(tmp_path, data, name='span', vqgan='vqgan', network_g=tiny('SPAN'),
                             datasets__train__gt_size=16, datasets__train__batch_size_per_gpu=1,
                             path__experiments_root=str(tmp_path / 'runs'), train__cl_opt__weights=[0.25, 0.5, 1],
                             train__step=[1], logger__print_freq=1, logger__save_checkpoint_freq=1)
    del opt['datasets']['val'], opt['val']

    def write(run_name: str, total_iter: int) -> str:
        run_opt = copy.deepcopy(opt)
        run_opt.update(name=run_name)
        run_opt['train']['total_iter'] = total_iter
        path = tmp_path / f'{run_name}_{total_iter}.yml'
        path.write_text(__import__('yaml').safe_dump(run_opt))
        return str(path)

    run([str(BIN / 'dckd-train'), '-opt', write('full', 3)], cwd=tmp_path)
    run([str(BIN / 'dckd-train'), '-opt', write('part', 2)], cwd=tmp_path)
    run([str(BIN / 'dckd-train'), '-opt', write('part', 3), '--auto_resume'], cwd=tmp_path)
    for name in ('net_g_3.pth', 'net_his_3.pth'):
        a = torch.load(tmp_path / 'runs/full/models' / name, weights_only=True)
        b = torch.load(tmp_path / 'runs/part/models' / name, weights_only=True)
        for param_key in a:
            assert all(torch.equal(value, b[param_key][key]) for key, value in a[param_key].items()), name
    from spandrel import ModelLoader
    from spandrel.architectures.SPAN import SPAN

    from dckd_basicsr.commands.export import main as export_main
    exported = tmp_path / 'span_x2.safetensors'
    export_main(['--model', str(tmp_path / 'runs/full/models/net_g_3.pth'), '-opt', write('full', 3), '--to',
                 'spandrel', '-o', str(exported), '--atol', '1e-5'])
    descriptor = ModelLoader().load_from_file(str(exported))
    assert type(descriptor.model) is SPAN and descriptor.scale == 2


@pytest.mark.slow
@pytest.mark.parametrize('row', ['SPAN/train_SPAN_SRx4_DCKDstar', 'SAFMN/train_SAFMN_SRx4_DCKDstar_SpandrelTeacher'])
def test_shipped_efficient_student_files_pass_the_smoke_run(tmp_path, row):
    """``dckd-train --smoke --stand-in`` with the user's data given by --force_yml; for the SpandrelTeacher row the
    stand-in teacher is a random HAT x4 (released window 16) that spandrel detects from its file."""
    data = make_pairs(tmp_path / 'data', count=2, size=96, scale=4)
    given = [f'datasets:train:dataroot_{key}={folder}' for key, folder in data.items()]
    given += [f'datasets:val_1:dataroot_{key}={folder}' for key, folder in data.items()]
    given += ['datasets:train:io_backend:type=disk', 'datasets:val_1:filename_tmpl={}', 'datasets:val_2=~',
              'datasets:val_3=~']
    proc = run([str(BIN / 'dckd-train'), '-opt', str(REPO / f'options/train/{row}.yml'), '--smoke', '--stand-in',
                '--force_yml', *given], cwd=tmp_path)
    log = next((tmp_path / 'experiments').glob('smoke_*/train_*.log')).read_text()
    assert 'End of training' in log and '# psnr' in log, proc.stdout[-2000:]
    if row.endswith('SpandrelTeacher'):
        assert 'spandrel detected HAT' in log


# ---------------------------------------------------------------------------------------------- FAKD stages
@pytest.mark.parametrize('name', archs(names=[name for name, arch in sorted(REGISTERED.items()) if arch.stages]))
def test_default_fakd_taps_record_maps_at_the_input_resolution(name):
    net_opt = tiny(name)
    stages, end = students.feature_stages(net_opt)
    taps = [stages[stage_at(f, len(stages))] for f in FAKD_DEPTHS] + [end]
    net = build_network(copy.deepcopy(net_opt))
    recorder = FeatureRecorder(net, taps, 'train.fakd_opt.student_layers')
    x = batch(name, 0)['lq']
    net(x)
    for tap, feature in zip(taps, recorder.first()):
        assert feature.dim() == 4 and feature.shape[-2:] == x.shape[-2:], tap


def test_feature_stages_of_the_default_span_and_realplksr():
    span = students.feature_stages({'type': 'SPAN', 'num_in_ch': 3, 'num_out_ch': 3})
    assert span == ([f'block_{i}' for i in range(1, 7)], 'upsampler:input')
    stages, end = students.feature_stages({'type': 'RealPLKSR', 'n_blocks': 12})
    assert stages[0] == 'feats.1' and stages[-1] == 'feats.12' and end == 'feats.13:input'
    assert students.feature_stages({'type': 'Compact'}) is None and students.feature_stages({'type': 'RCAN'}) is None


def test_fakd_defaults_of_a_spandrel_student_follow_the_authors_depths():
    """``train.fakd_opt`` without ``student_layers`` taps a SPAN student (6 blocks) at stages 2 and 4 (0.3 and 0.7
    of the body, rounded) and the upsampler's input, as RCAN's defaults are body.2, body.6 of 10 groups."""
    span = {'type': 'SPAN', 'num_in_ch': 3, 'num_out_ch': 3}
    assert default_feature_layers(span) == ['block_2', 'block_4', 'upsampler:input']
    assert default_feature_layers({'type': 'Compact'}) is None


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize('typo, close', [('SPANN', 'SPAN'), ('RealPLKSRR', 'RealPLKSR'),
                                         ('SpandrelSwinIr', 'SpandrelSwinIR')])
def test_unknown_type_lists_close_names(typo, close):
    with pytest.raises(UnknownTypeError) as info:
        build_network({'type': typo})
    assert f'Did you mean: {close}' in str(info.value)


def test_wrong_keyword_names_the_arch_and_its_arguments():
    block = {'type': 'SPAN', 'num_in_ch': 3, 'num_out_ch': 3, 'feature_chanels': 48}
    with pytest.raises(OptionError, match=r"network_g\.feature_chanels: SPAN has no option 'feature_chanels'; it "
                                          r'accepts .*num_in_ch, num_out_ch, feature_channels, upscale, bias'):
        check_option_keys({'network_g': block})
    with pytest.raises(OptionError, match=r"network_g: SPAN \(spandrel SPAN\) has no option 'feature_chanels'; it "
                                          r'accepts num_in_ch, num_out_ch, feature_channels'):
        check_network_options({'network_g': block})
    with pytest.raises(OptionError, match=r'SPAN \(spandrel SPAN\) needs num_in_ch, num_out_ch'):
        build_network({'type': 'SPAN'})


@pytest.mark.parametrize('type_name, words', [('GFPGAN', 'face-restoration'), ('RestoreFormer', 'face-restoration'),
                                              ('CodeFormer', 'spandrel_extra_arches'), ('LaMa', 'inpainting'),
                                              ('DDColor', 'colourisation'), ('SeemoRe', 'batches'),
                                              ('MMRealSR', 'degradation')])
def test_refused_archs_say_why(type_name, words):
    with pytest.raises(OptionError) as info:
        check_network_options({'scale': 4, 'network_g': {'type': type_name}})
    message = str(info.value)
    assert message.startswith(f"network_g.type: spandrel's {type_name} is not registered: ") and words in message
    assert '\n' not in message and type_name not in ARCH_REGISTRY


@pytest.mark.parametrize('block, scale, message', [
    ({'type': 'SwiftSRGAN', 'upscale_factor': 3}, 3,
     'network_g: SwiftSRGAN cannot build upscale_factor: 3 (given); it builds x1, x2, x4, x8.'),
    ({'type': 'FDAT', 'scale': 8}, 8, 'network_g: FDAT cannot build scale: 8 (given); it builds x1, x2, x3, x4.'),
    ({'type': 'HAT', 'upscale': 6}, 6, 'network_g: HAT cannot build upscale: 6 (given); it builds x1, x3 or a power'),
    ({'type': 'UpCunet4x'}, 2, 'network_g: UpCunet4x builds x4 but scale is 2; use a x2 network.'),
    ({'type': 'SPAN', 'num_in_ch': 3, 'num_out_ch': 3}, 2,
     'network_g: SPAN builds x4 but scale is 2; set network_g.upscale: 2.'),
    ({'type': 'SpandrelNAFNet'}, 4, 'network_g: SpandrelNAFNet builds x1 but scale is 4; use a x4 network.'),
])
def test_scales_the_arch_cannot_build_are_named_with_those_it_can(block, scale, message):
    with pytest.raises(OptionError) as info:
        check_network_options({'scale': scale, 'network_g': block})
    assert str(info.value).startswith(message)


def test_the_scale_check_also_runs_when_the_network_is_built():
    with pytest.raises(OptionError, match=r'SwiftSRGAN cannot build upscale_factor: 3 \(given\)'):
        build_network({'type': 'SwiftSRGAN', 'upscale_factor': 3})


def test_options_that_build_pass_the_checks():
    check_network_options({'scale': 4, 'network_g': tiny_network('spandrel_SPAN', upscale=4),
                           'network_t': {'type': 'SwinIR', 'upscale': 4}, 'network_his': True})


# ---------------------------------------------------------------------------------------------- precision
@pytest.mark.parametrize('block, precision, message', [
    ({'type': 'KBNet_s'}, 'bf16', 'train.fast.amp: bf16, but network_g.type KBNet_s does not train in bf16'),
    ({'type': 'SpandrelSwinIR'}, 'fp16',
     'train.fast.amp: fp16, but spandrel marks network_g.type SpandrelSwinIR as not supporting fp16; use '
     'train.fast.amp: bf16.'),
    ({'type': 'RealPLKSR'}, 'fp16', 'train.fast.amp: fp16, but spandrel marks network_g.type RealPLKSR without '
                                    'layer_norm: true as not supporting fp16; use train.fast.amp: bf16.'),
])
def test_precisions_spandrel_marks_unsupported_are_refused(block, precision, message):
    with pytest.raises(OptionError) as info:
        check_precision(block, precision)
    assert str(info.value).startswith(message) and '\n' not in str(info.value)


def test_supported_precisions_and_other_archs_pass():
    check_precision({'type': 'SPAN'}, 'bf16')
    check_precision({'type': 'SPAN'}, 'fp16')
    check_precision({'type': 'RealPLKSR', 'layer_norm': True}, 'fp16')
    check_precision({'type': 'KBNet_s'}, None)
    check_precision({'type': 'SwinIR'}, 'fp16')  # BasicSR's: not ours to judge
    with pytest.raises(OptionError, match=r'^train\.fast\.autocast: fp16, but spandrel marks network_t\.type HAT'):
        check_precision({'type': 'HAT'}, 'fp16', option='train.fast.autocast', key='network_t')


@pytest.mark.parametrize('updates, message', [
    (dict(network_g={'type': 'GFPGAN'}), "network_g.type: spandrel's GFPGAN is not registered: it is a face-restoration"),
    (dict(network_g={'type': 'SwiftSRGAN', 'upscale_factor': 3}), 'network_g: SwiftSRGAN cannot build upscale_factor: 3'),
    (dict(network_g={'type': 'KBNet_s'}, scale=1, train__fast={'amp': 'bf16'}),
     'train.fast.amp: bf16, but network_g.type KBNet_s does not train in bf16'),
    (dict(network_t={'type': 'SAFMN', 'dim': 8, 'upscaling_factor': 2}, train__fast={'autocast': 'fp16'}),
     'train.fast.autocast: fp16, but spandrel marks network_t.type SAFMN as not supporting fp16; use '
     'train.fast.autocast: bf16.'),
])
def test_the_preflight_refuses_what_a_spandrel_arch_cannot_do(tmp_path, updates, message):
    """Through the option checks every entry point runs before anything is built: the refused type's reason (not
    "no arch named"), the scale, the precision of the student (amp) and of the frozen teacher (autocast)."""
    from dckd_basicsr.integration.option_checks import check_options
    opt = dckd_train_options(tmp_path, make_pairs(tmp_path / 'data'), **updates)
    with pytest.raises(OptionError) as info:
        check_options(opt)
    assert message in str(info.value)
    assert not (tmp_path / 'experiments').exists()


def test_a_smoke_stand_in_for_a_spandrel_teacher_file_is_detected_by_spandrel():
    """``--smoke --stand-in`` without the SpandrelTeacher's file: a registered arch of the named architecture at the
    run's scale, whose random weights spandrel detects as that architecture (the run reads them with format auto)."""
    from spandrel import ModelLoader

    from dckd_basicsr.integration.smoke import stand_in_network
    opt = {'scale': 2, 'network_t': {'type': 'SpandrelTeacher', 'architecture': 'SPAN'}}
    net_opt, fmt = stand_in_network(opt, 'pretrain_network_t')
    assert (net_opt, fmt) == ({'type': 'SPAN', 'num_in_ch': 3, 'num_out_ch': 3, 'upscale': 2}, 'auto')
    descriptor = ModelLoader().load_from_state_dict(build_network(dict(net_opt)).state_dict())
    assert descriptor.architecture.id == 'SPAN' and descriptor.scale == 2
    assert stand_in_network({'scale': 4, 'network_t': {'type': 'SpandrelTeacher', 'architecture': 'HAT'}},
                            'pretrain_network_t')[0] == {'type': 'HAT', 'window_size': 16, 'upscale': 4}
    with pytest.raises(OptionError, match='network_t.architecture: LaMa: --stand-in has no registered spandrel arch'):
        stand_in_network({'scale': 4, 'network_t': {'type': 'SpandrelTeacher', 'architecture': 'LaMa'}},
                         'pretrain_network_t')


def test_hat_windows_its_overlapping_attention_cannot_unfold_are_refused():
    """spandrel's HAT defaults (window 7: an overlap of 3) fail in the forward; the check says why before anything
    is built, and the released window 16 passes."""
    with pytest.raises(OptionError, match=r'network_g: HAT: window_size 7 with overlap_ratio 0.5 gives an overlapping '
                                          r'window of 10, which HAT\'s attention cannot unfold'):
        check_network_options({'scale': 4, 'network_g': {'type': 'HAT', 'upscale': 4}})
    check_network_options({'scale': 4, 'network_g': {'type': 'HAT', 'upscale': 4, 'window_size': 16}})


def test_a_spandrel_student_validates_as_spandrel_runs_it(tmp_path):
    """OmniSR has a window_size option, but pads itself to what it needs: validation does not pad it to that window
    first (so KD rows validate as Scratch rows and the exported network do), unless val.pad_multiple says so."""
    teacher = tiny_network('msrresnet_teacher', upscale=2)
    model = build_model(kd_options(tmp_path, tiny('OmniSR'), teacher, logits_opt=dict(type='L1Loss')))
    assert tiny('OmniSR')['window_size'] == 4 and model.pad_multiple == 1
    opt = kd_options(tmp_path / 'b', tiny('OmniSR'), teacher, logits_opt=dict(type='L1Loss'))
    opt['val']['pad_multiple'] = 8
    assert build_model(opt).pad_multiple == 8
