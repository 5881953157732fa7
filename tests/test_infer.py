"""dckd-infer and the network detection behind it (dckd_basicsr/commands/infer.py, dckd_basicsr/checkpoints/detect.py).

Checkpoints are tiny BasicSR ``net_g`` files written here; detection must rebuild each network so that the weights
load strictly and the output is bit-identical to the original network's.
"""
import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.utils import img2tensor, tensor2img
from helpers import BIN, run, tiny_network, write_options

from dckd_basicsr.checkpoints.detect import detect_network
from dckd_basicsr.errors import OptionError
from dckd_basicsr.checkpoints.students import load_student
from dckd_basicsr.commands.image_io import output_path
from dckd_basicsr.commands.infer import check_dtype, main
from dckd_basicsr.commands.tiling import restore

NAFNET = dict(type='NAFNet', img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
RESTORMER = dict(type='Restormer', dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4],
                 ffn_expansion_factor=2.66)
EDSR = dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=3)

STUDENTS = {
    'swinir': tiny_network('swinir_student', depths=[2]),
    'swinir_direct_x3': tiny_network('swinir_student', depths=[2, 1], num_heads=[2, 2], upscale=3,
                                     upsampler='pixelshuffledirect'),
    'rcan': tiny_network('rcan_student'),
    'msrresnet': tiny_network('msrresnet'),
    'msrresnet_x4': tiny_network('msrresnet', upscale=4),
    'nafnet': NAFNET,
    'edsr_x3': EDSR,
    'restormer': RESTORMER,
}


def save_student(net_opt, path, seed=0, ema=True):
    """A BasicSR ``net_g`` file: ``params`` and (``ema``) a different ``params_ema``."""
    torch.manual_seed(seed)
    net = build_network(dict(net_opt)).eval()
    state = {'params': {k: v + 1 if v.is_floating_point() else v for k, v in net.state_dict().items()}}
    if ema:
        state['params_ema'] = net.state_dict()
    else:
        state['params'] = net.state_dict()
    torch.save(state, path)
    return net


@pytest.mark.parametrize('name', list(STUDENTS))
def test_detection_rebuilds_the_network_tensor_exact(tmp_path, name):
    net = save_student(STUDENTS[name], tmp_path / 'net_g_5.pth')
    student = load_student(str(tmp_path / 'net_g_5.pth'))
    assert student.opt['type'] == STUDENTS[name]['type']
    assert student.param_key == 'params_ema'
    theirs, ours = net.state_dict(), student.net.state_dict()
    assert list(theirs) == list(ours)
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(student.net(x), net(x))
    expected = {key: value for key, value in STUDENTS[name].items() if key not in ('type', 'img_size')}
    assert {key: student.opt[key] for key in expected} == expected
    assert student.pad_multiple == (4 if name.startswith('swinir') else 1)


def test_detection_without_ema_uses_params_and_reports_assumptions(tmp_path):
    net = save_student(STUDENTS['rcan'], tmp_path / 'net_g_1.pth', ema=False)
    student = load_student(str(tmp_path / 'net_g_1.pth'))
    assert student.param_key == 'params'
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), student.net.state_dict().values()))
    assert any(note.startswith('img_range: 255') for note in student.assumed)
    assert 'RCAN' in student.describe() and 'num_group: 1' in student.describe()


def test_undetectable_checkpoint_names_the_file(tmp_path):
    torch.save({'params': {'generator.weight': torch.zeros(3)}}, tmp_path / 'odd.pth')
    with pytest.raises(OptionError, match=r'odd\.pth: cannot tell the network.*-opt FILE'):
        load_student(str(tmp_path / 'odd.pth'))
    with pytest.raises(OptionError, match='cannot tell the network'):
        detect_network({'x.weight': torch.zeros(1)})


def test_option_file_network_and_pad_multiple(tmp_path):
    opt = tiny_network('swinir_student', depths=[2])
    net = save_student(opt, tmp_path / 'net_g.pth')
    option_file = write_options(tmp_path / 'opt.yml', {'network_g': opt, 'val': {'pad_multiple': 8}})
    student = load_student(str(tmp_path / 'net_g.pth'), option_file)
    assert student.pad_multiple == 8 and student.source.startswith('-opt')
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(student.net(x), net(x))
    bad = write_options(tmp_path / 'bad.yml', {'network_g': tiny_network('rcan_student')})
    with pytest.raises(OptionError, match=r'--model: .*net_g\.pth does not fit RCAN'):
        load_student(str(tmp_path / 'net_g.pth'), bad)


def test_tiling_equals_whole_image_for_a_convolutional_student():
    """MSRResNet (1 block): receptive field radius ~6 LQ pixels, inside tile_pad 8, so the seams are exact."""
    torch.manual_seed(0)
    net = build_network(tiny_network('msrresnet')).eval()
    x = torch.rand(1, 3, 45, 38)
    whole = restore(net, x)
    tiled = restore(net, x, tile=16, tile_pad=8)
    assert tiled.shape == whole.shape == (1, 3, 90, 76)
    assert (tiled - whole).abs().max().item() <= 1e-5


@pytest.mark.parametrize('sharpen, tolerance', [(1, 1e-5), (20, 1e-3)])
def test_tiling_swinir_within_measured_tolerance(sharpen, tolerance):
    """SwinIR's windows (and the shifted-window masks) depend on where the tile starts, so tiles differ slightly from
    the whole image. Measured on this 2-block tiny SwinIR (45x38, tile 16, tile_pad 8, window 4): max abs difference
    2e-6 to 4e-6 with its initial weights; 1e-4 to 2e-4 with the attention and MLP weights x20 (sharper attention)."""
    torch.manual_seed(0)
    net = build_network(tiny_network('swinir_student', depths=[2])).eval()
    with torch.no_grad():
        for name, param in net.named_parameters():
            if 'qkv.weight' in name or '.fc' in name:
                param.mul_(sharpen)
    x = torch.rand(1, 3, 45, 38, generator=torch.Generator().manual_seed(0))
    whole = restore(net, x, pad_multiple=4)
    tiled = restore(net, x, pad_multiple=4, tile=16, tile_pad=8)
    assert tiled.shape == whole.shape == (1, 3, 90, 76)
    assert (tiled - whole).abs().max().item() <= tolerance


def test_output_naming_like_real_esrgan():
    assert output_path('in/a.jpg', 'out', 'out', 'auto', False, False) == 'out/a_out.jpg'
    assert output_path('in/a.jpg', 'out', '', 'png', False, False) == 'out/a.png'
    assert output_path('in/a.jpg', 'out', 'x', 'auto', True, False) == 'out/a_x.png'  # RGBA: PNG
    assert output_path('in/a.tif', 'out', 'x', 'auto', False, True) == 'out/a_x.tif'  # 16-bit TIFF stays
    assert output_path('in/a.png', 'out', 'x', 'jpg', False, True) == 'out/a_x.png'  # no 16-bit JPEG


def _write_inputs(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    color = cv2.GaussianBlur(rng.integers(0, 256, (13, 11, 3), dtype=np.uint8), (3, 3), 1)
    cv2.imwrite(str(folder / 'color.png'), color)
    cv2.imwrite(str(folder / 'gray.png'), color[..., 0])
    rgba = np.dstack([color, rng.integers(0, 256, (13, 11), dtype=np.uint8)])
    cv2.imwrite(str(folder / 'alpha.png'), rgba)
    cv2.imwrite(str(folder / 'deep.png'), (color.astype(np.uint16) * 257))
    (folder / 'notes.txt').write_text('not an image')
    return color


def test_infer_folder_writes_expected_files(tmp_path):
    net = save_student(tiny_network('msrresnet'), tmp_path / 'net_g_10.pth')
    color = _write_inputs(tmp_path / 'in')
    written = main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--model', str(tmp_path / 'net_g_10.pth'),
                    '--quiet'])
    names = sorted(p.name for p in (tmp_path / 'out').iterdir())
    assert names == ['alpha_out.png', 'color_out.png', 'deep_out.png', 'gray_out.png']
    assert len(written) == 4
    out = {name: cv2.imread(str(tmp_path / 'out' / name), cv2.IMREAD_UNCHANGED) for name in names}
    assert out['color_out.png'].shape == (26, 22, 3) and out['color_out.png'].dtype == np.uint8
    assert out['gray_out.png'].shape == (26, 22)
    assert out['alpha_out.png'].shape == (26, 22, 4)
    assert out['deep_out.png'].shape == (26, 22, 3) and out['deep_out.png'].dtype == np.uint16
    # the colour result is exactly BasicSR's img2tensor -> EMA network -> tensor2img
    with torch.no_grad():
        expected = tensor2img(net(img2tensor(color / 255., bgr2rgb=True, float32=True)[None]))
    np.testing.assert_array_equal(out['color_out.png'], expected)
    np.testing.assert_array_equal(out['alpha_out.png'][..., :3], expected)
    # 16-bit in, 16-bit out, the same picture within 8-bit rounding
    assert np.abs(out['deep_out.png'] / 65535. - expected / 255.).max() <= 1.5 / 255


def test_infer_single_image_with_tiles_suffix_and_outscale(tmp_path):
    save_student(tiny_network('msrresnet'), tmp_path / 'net_g.pth')
    _write_inputs(tmp_path / 'in')
    args = ['-i', str(tmp_path / 'in' / 'color.png'), '-o', str(tmp_path / 'out'), '--model',
            str(tmp_path / 'net_g.pth'), '--quiet']
    main(args + ['--suffix', ''])
    main(args + ['--suffix', 'tiled', '--tile', '6', '--tile-pad', '8'])
    main(args + ['--suffix', 's3', '--outscale', '3', '--ext', 'jpg'])
    whole = cv2.imread(str(tmp_path / 'out' / 'color.png'))
    tiled = cv2.imread(str(tmp_path / 'out' / 'color_tiled.png'))
    assert np.abs(whole.astype(int) - tiled).max() <= 1  # float seams within 1e-5 may flip one rounding
    assert cv2.imread(str(tmp_path / 'out' / 'color_s3.jpg')).shape == (39, 33, 3)


def test_restoration_network_keeps_the_size(tmp_path):
    net = save_student(NAFNET, tmp_path / 'net_g.pth')
    color = _write_inputs(tmp_path / 'in')  # 13x11: NAFNet pads to a multiple of 4 inside and crops back
    main(['-i', str(tmp_path / 'in' / 'color.png'), '-o', str(tmp_path / 'out'), '--model', str(tmp_path / 'net_g.pth'),
          '--quiet', '--tile', '8', '--tile-pad', '4'])
    out = cv2.imread(str(tmp_path / 'out' / 'color_out.png'))
    assert out.shape == color.shape
    with torch.no_grad():
        whole = tensor2img(net(img2tensor(color / 255., bgr2rgb=True, float32=True)[None]))
    # channel attention pools over each tile: close to, not equal to, the whole-image result
    assert np.abs(out.astype(int) - whole).mean() < 2


def test_one_channel_network_refuses_colour_images(tmp_path):
    save_student(tiny_network('msrresnet', num_in_ch=1, num_out_ch=1), tmp_path / 'net_g.pth')
    _write_inputs(tmp_path / 'in')
    args = ['-o', str(tmp_path / 'out'), '--model', str(tmp_path / 'net_g.pth'), '--quiet']
    main(['-i', str(tmp_path / 'in' / 'gray.png')] + args)
    assert cv2.imread(str(tmp_path / 'out' / 'gray_out.png'), cv2.IMREAD_UNCHANGED).shape == (26, 22)
    with pytest.raises(OptionError, match=r'color\.png is a colour image, but the network takes 1-channel'):
        main(['-i', str(tmp_path / 'in' / 'color.png')] + args)


def test_reduced_precision_failure_is_one_clear_message(tmp_path):
    save_student(tiny_network('msrresnet'), tmp_path / 'net_g.pth')
    student = load_student(str(tmp_path / 'net_g.pth'))

    def no_half(x):
        raise RuntimeError('"slow_conv2d_cpu" not implemented for \'Half\'')

    student.net.forward = no_half
    with pytest.raises(OptionError, match=r'--fp16: MSRResNet does not run in float16 on cpu .*not implemented'):
        check_dtype(student, torch.device('cpu'), torch.float16, '--fp16')


def test_missing_model_names_the_flag(tmp_path):
    _write_inputs(tmp_path / 'in')
    with pytest.raises(OptionError, match=r'--model: .*missing\.pth: no such checkpoint file'):
        main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--model', str(tmp_path / 'missing.pth')])


@pytest.mark.slow
def test_console_script(tmp_path):
    """``dckd-infer`` as a user runs it: the detected network is printed and the image written."""
    save_student(tiny_network('swinir_student'), tmp_path / 'net_g_5.pth')
    _write_inputs(tmp_path / 'in')
    proc = run([str(BIN / 'dckd-infer'), '-i', str(tmp_path / 'in' / 'color.png'), '-o', str(tmp_path / 'out'),
                '--model', str(tmp_path / 'net_g_5.pth'), '--tile', '8', '--device', 'cpu'], cwd=tmp_path)
    assert 'SwinIR (upscale: 2' in proc.stdout and 'padded to a multiple of 4' in proc.stdout
    assert cv2.imread(str(tmp_path / 'out' / 'color_out.png')).shape == (26, 22, 3)


def test_an_unreadable_image_is_skipped_with_a_warning_and_listed_at_the_end(tmp_path, capsys):
    """One truncated and one empty file among three images: the readable one is restored, each bad one gets one
    warning, the end lists both and the command fails (exit status 2 via report_option_errors);
    --stop-on-error stops at the first, before anything after it is written."""
    from dckd_basicsr.commands.infer import SkippedImages
    save_student(tiny_network('msrresnet'), tmp_path / 'net_g.pth')
    _write_inputs(tmp_path / 'src')
    folder = tmp_path / 'in'
    folder.mkdir()
    png = (tmp_path / 'src' / 'color.png').read_bytes()
    (folder / 'a_broken.png').write_bytes(png[:len(png) // 2])
    (folder / 'b_good.png').write_bytes(png)
    (folder / 'c_empty.png').write_bytes(b'')
    args = ['-i', str(folder), '-o', str(tmp_path / 'out'), '--model', str(tmp_path / 'net_g.pth'), '--quiet']
    with pytest.raises(SkippedImages) as error:
        main(args)
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['b_good_out.png']
    assert str(error.value).splitlines() == [
        'skipped 2 of 3 images that could not be read (--stop-on-error stops at the first):',
        f'  {folder / "a_broken.png"}: cannot be read as an image (it is damaged or truncated, or not an image cv2 '
        'can decode).',
        f'  {folder / "c_empty.png"}: the file is empty (0 bytes).']
    warnings = [line for line in capsys.readouterr().err.splitlines() if 'warning' in line]
    assert [w.split(': ', 3)[2] for w in warnings] == ['skipped ' + str(folder / 'a_broken.png'),
                                                      'skipped ' + str(folder / 'c_empty.png')]
    with pytest.raises(OptionError, match=r'a_broken\.png: cannot be read as an image') as error:
        main(args[:3] + [str(tmp_path / 'out2')] + args[4:] + ['--stop-on-error'])
    assert not isinstance(error.value, SkippedImages) and not (tmp_path / 'out2').exists()


def test_a_truncated_model_file_is_one_line_saying_so(tmp_path):
    save_student(tiny_network('msrresnet'), tmp_path / 'net_g.pth')
    data = (tmp_path / 'net_g.pth').read_bytes()
    (tmp_path / 'net_g.pth').write_bytes(data[:len(data) // 2])
    _write_inputs(tmp_path / 'in')
    with pytest.raises(OptionError, match=r'^--model: .*net_g\.pth: the file ends early \(\d+ bytes; a truncated '
                                          r'download or an interrupted write\?\)'):
        main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--model', str(tmp_path / 'net_g.pth')])
