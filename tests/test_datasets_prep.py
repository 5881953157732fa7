"""datasets_prep/: layouts, exact bicubic LR, BasicSR LMDB round trips, no-op re-runs and clear errors for bad input.

Every test builds its own images in a tmp folder (odd sizes, JPEG, greyscale, corrupt files).
"""
import os
import subprocess
import sys
from os import path as osp

import cv2
import lmdb
import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from datasets_prep import make_demo_data, prepare_benchmarks, prepare_derain, prepare_div2k  # noqa: E402
from datasets_prep import prepare_gopro  # noqa: E402
from datasets_prep.images import IMG_EXTENSIONS, bicubic_downscale  # noqa: E402
from datasets_prep.outputs import lmdb_keys, read_lmdb_meta  # noqa: E402
from datasets_prep.sub_images import crop_starts, sub_image_boxes  # noqa: E402
from datasets_prep import verify  # noqa: E402
from datasets_prep.verify import paired_dataset  # noqa: E402
from basicsr.data.transforms import mod_crop  # noqa: E402
from basicsr.utils import img2tensor  # noqa: E402
from basicsr.utils.matlab_functions import imresize  # noqa: E402
from dckd_basicsr.errors import OptionError  # noqa: E402


def make_image(height, width, seed, gray=False):
    """A smooth random image with some texture (so that resizing and PNG coding are not trivial)."""
    rng = np.random.default_rng(seed)
    channels = 1 if gray else 3
    coarse = rng.uniform(0, 255, (height // 4 + 2, width // 4 + 2, channels)).astype(np.float32)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).reshape(height, width, channels)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    return img[..., 0] if gray else img


def write(path, img):
    os.makedirs(osp.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, img)
    return img


def matlab_lr(img, scale):
    """The reference: BasicSR's imresize on the integer image, rounded and clipped like MATLAB's uint8 output."""
    return np.clip(np.round(imresize(img, 1 / scale)), 0, 255).astype(np.uint8)


def lmdb_image(lmdb_path, key):
    env = lmdb.open(lmdb_path, readonly=True, lock=False)
    with env.begin() as txn:
        data = txn.get(key.encode())
    env.close()
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def snapshot(folder):
    """(path, inode, mtime_ns) of every file below ``folder``: unchanged by a no-op re-run."""
    found = []
    for root, _, files in os.walk(folder):
        for name in files:
            stat = os.stat(osp.join(root, name))
            found.append((osp.join(root, name), stat.st_ino, stat.st_mtime_ns))
    return sorted(found)


# ------------------------------------------------------------------------------------------------------ helpers
def test_crop_starts_follow_basicsr_recipe():
    # DIV2K 0004 is 1344x2040: 5 x 8 = 40 sub-images of 480 with step 240, the last one flush with the border
    assert crop_starts(1344, 480, 240) == [0, 240, 480, 720, 864]
    assert crop_starts(2040, 480, 240) == [0, 240, 480, 720, 960, 1200, 1440, 1560]
    assert len(sub_image_boxes(1344, 2040, 480, 240)) == 40
    assert crop_starts(500, 480, 240, thresh=30) == [0]  # 20 px left over <= threshold: dropped
    assert crop_starts(500, 480, 240, thresh=10) == [0, 20]
    assert crop_starts(480, 480, 240) == [0]


def test_bicubic_downscale_is_rounded_imresize():
    img = make_image(24, 36, seed=0)
    lr = bicubic_downscale(img, 3)
    assert lr.dtype == np.uint8 and lr.shape == (8, 12, 3)
    np.testing.assert_array_equal(lr, matlab_lr(img, 3))
    np.testing.assert_array_equal(bicubic_downscale(np.full((8, 8), 77, np.uint8), 4), np.full((2, 2), 77))
    with pytest.raises(ValueError, match='mod-crop'):
        bicubic_downscale(make_image(25, 36, seed=0), 3)


# ----------------------------------------------------------------------------------------------------- DIV2K
DIV2K_ARGS = ['--scales', '2', '4', '--crop-size', '16', '--step', '12', '--workers', '1']


@pytest.fixture(scope='module')
def div2k(tmp_path_factory):
    """Two photos: ``a`` 40x52 (3 x 4 sub-images), ``b`` 43x57, mod-cropped to 40x56 (3 x 5, last column at x=40)."""
    tmp = tmp_path_factory.mktemp('div2k')
    hr = {'a': write(str(tmp / 'HR' / 'a.png'), make_image(40, 52, seed=1)),
          'b': write(str(tmp / 'HR' / 'b.png'), make_image(43, 57, seed=2))}
    out = str(tmp / 'DIV2K')
    outputs = prepare_div2k.main(['--hr', str(tmp / 'HR'), '--out', out] + DIV2K_ARGS)
    return tmp, hr, out, outputs


def test_div2k_layout_and_meta_info(div2k):
    _, _, out, outputs = div2k
    names = ['DIV2K_train_HR_sub.lmdb', 'DIV2K_train_LR_bicubic_X2_sub.lmdb', 'DIV2K_train_LR_bicubic_X4_sub.lmdb']
    assert sorted(os.listdir(out)) == names  # no temporary folder left
    assert [output.status for output in outputs] == ['built'] * 3
    for name in names:
        assert sorted(os.listdir(osp.join(out, name))) == ['data.mdb', 'lock.mdb', 'meta_info.txt']
    keys = [f'a_s{i:03d}' for i in range(1, 13)] + [f'b_s{i:03d}' for i in range(1, 16)]
    for name, size in zip(names, (16, 8, 4)):
        with open(osp.join(out, name, 'meta_info.txt')) as f:
            assert f.read().splitlines() == [f'{key}.png ({size},{size},3) 1' for key in keys]
        assert sorted(lmdb_keys(osp.join(out, name))) == keys


def test_div2k_sub_images_and_exact_bicubic_lr(div2k):
    _, hr, out, _ = div2k
    b = hr['b'][:40, :56]  # mod-cropped to a multiple of lcm(2, 4)
    # b_s005: first row, fifth column, flush with the right border at x = 56 - 16
    np.testing.assert_array_equal(lmdb_image(osp.join(out, 'DIV2K_train_HR_sub.lmdb'), 'b_s005'), b[0:16, 40:56])
    np.testing.assert_array_equal(lmdb_image(osp.join(out, 'DIV2K_train_HR_sub.lmdb'), 'a_s012'), hr['a'][24:, 36:])
    for scale in (2, 4):
        lr = lmdb_image(osp.join(out, f'DIV2K_train_LR_bicubic_X{scale}_sub.lmdb'), 'b_s005')
        y, x, size = 0, 40 // scale, 16 // scale
        np.testing.assert_array_equal(lr, matlab_lr(b, scale)[y:y + size, x:x + size])


def test_div2k_lmdb_round_trips_through_paired_image_dataset(div2k):
    _, hr, out, _ = div2k
    dataset = paired_dataset(osp.join(out, 'DIV2K_train_HR_sub.lmdb'),
                                    osp.join(out, 'DIV2K_train_LR_bicubic_X4_sub.lmdb'), 4)
    assert len(dataset) == 27
    item = dataset[13]  # sorted keys: a_s001..a_s012, b_s001, b_s002
    assert item['gt_path'] == 'b_s002' and item['lq_path'] == 'b_s002'
    expected = img2tensor(hr['b'][0:16, 12:28].astype(np.float32) / 255., bgr2rgb=True, float32=True)
    assert item['gt'].shape == (3, 16, 16) and item['lq'].shape == (3, 4, 4)
    assert item['gt'].equal(expected)


def test_div2k_rerun_is_noop_and_overwrite_rebuilds(div2k, capsys):
    tmp, _, out, _ = div2k
    before = snapshot(out)
    outputs = prepare_div2k.main(['--hr', str(tmp / 'HR'), '--out', out] + DIV2K_ARGS)
    assert [output.status for output in outputs] == ['skipped'] * 3
    assert snapshot(out) == before
    assert '0 built, 3 already complete' in capsys.readouterr().out
    rebuilt = prepare_div2k.main(['--hr', str(tmp / 'HR'), '--out', out, '--overwrite'] + DIV2K_ARGS)
    assert [output.status for output in rebuilt] == ['built'] * 3
    assert [p for p, _, _ in snapshot(out)] == [p for p, _, _ in before]
    assert snapshot(out) != before


def test_div2k_pool_gives_identical_lmdbs(div2k):
    tmp, _, out, _ = div2k
    pooled = str(tmp / 'pooled')
    prepare_div2k.main(['--hr', str(tmp / 'HR'), '--out', pooled] + DIV2K_ARGS[:-1] + ['2'])
    for name in os.listdir(out):
        with open(osp.join(out, name, 'meta_info.txt')) as f, open(osp.join(pooled, name, 'meta_info.txt')) as g:
            assert f.read() == g.read()
        for key in lmdb_keys(osp.join(out, name)):
            np.testing.assert_array_equal(lmdb_image(osp.join(out, name), key), lmdb_image(osp.join(pooled, name), key))


def test_div2k_uses_given_lr_files(tmp_path):
    hr = write(str(tmp_path / 'HR' / '0001.png'), make_image(40, 52, seed=3))
    given = {s: write(str(tmp_path / 'LR' / f'X{s}' / f'0001x{s}.png'), make_image(40 // s, 52 // s, seed=10 + s))
             for s in (2, 4)}
    out = str(tmp_path / 'out')
    prepare_div2k.main(['--hr', str(tmp_path / 'HR'), '--lr', str(tmp_path / 'LR'), '--out', out] + DIV2K_ARGS)
    # 0001_s006: second row (y=12), second column (x=12)
    np.testing.assert_array_equal(lmdb_image(osp.join(out, 'DIV2K_train_HR_sub.lmdb'), '0001_s006'), hr[12:28, 12:28])
    np.testing.assert_array_equal(lmdb_image(osp.join(out, 'DIV2K_train_LR_bicubic_X2_sub.lmdb'), '0001_s006'),
                                  given[2][6:14, 6:14])
    write(str(tmp_path / 'LR' / 'X4' / '0001x4.png'), make_image(11, 13, seed=0))
    with pytest.raises(OptionError, match=r'0001x4\.png is 11x13, expected 10x13'):
        prepare_div2k.main(['--hr', str(tmp_path / 'HR'), '--lr', str(tmp_path / 'LR'), '--out', str(tmp_path / 'o2')]
                           + DIV2K_ARGS)


def test_div2k_bad_input_is_named_and_nothing_is_written(tmp_path):
    out = str(tmp_path / 'out')
    os.makedirs(tmp_path / 'empty')
    with pytest.raises(OptionError, match='empty: no images found'):
        prepare_div2k.main(['--hr', str(tmp_path / 'empty'), '--out', out] + DIV2K_ARGS)

    hr_dir = tmp_path / 'HR'
    write(str(hr_dir / 'good.png'), make_image(40, 52, seed=4))
    (hr_dir / 'broken.png').write_bytes(b'not an image at all')
    with pytest.raises(OptionError, match=r'broken\.png: cannot be read as an image'):
        prepare_div2k.main(['--hr', str(hr_dir), '--out', out] + DIV2K_ARGS)
    assert not osp.exists(out)

    write(str(hr_dir / 'broken.png'), make_image(12, 40, seed=5))
    with pytest.raises(OptionError, match=r'broken\.png is 12x40 .*smaller than the sub-image size 16'):
        prepare_div2k.main(['--hr', str(hr_dir), '--out', out] + DIV2K_ARGS)

    os.remove(hr_dir / 'broken.png')
    prepare_div2k.main(['--hr', str(hr_dir), '--out', out] + DIV2K_ARGS)
    before = snapshot(out)
    # a PNG whose header is fine but whose data is cut: found while decoding, in the middle of the build
    write(str(tmp_path / 'full.png'), make_image(40, 52, seed=6))
    (hr_dir / 'truncated.png').write_bytes((tmp_path / 'full.png').read_bytes()[:600])
    with pytest.raises(OptionError, match=r'truncated\.png: cannot be decoded'):
        prepare_div2k.main(['--hr', str(hr_dir), '--out', out, '--overwrite'] + DIV2K_ARGS)
    assert snapshot(out) == before  # the complete old outputs are untouched, no temporary folder is left

    with pytest.raises(OptionError, match=r'truncated\.png: cannot be decoded'):  # same through the pool
        prepare_div2k.main(['--hr', str(hr_dir), '--out', str(tmp_path / 'fresh' / 'DIV2K')] + DIV2K_ARGS[:-1] + ['2'])
    assert not osp.exists(tmp_path / 'fresh')

    os.remove(hr_dir / 'truncated.png')
    write(str(hr_dir / 'new.png'), make_image(40, 52, seed=7))
    with pytest.raises(OptionError, match='already exists but does not match the input .*--overwrite'):
        prepare_div2k.main(['--hr', str(hr_dir), '--out', out] + DIV2K_ARGS)
    with pytest.raises(OptionError, match='not a multiple of scale 4'):
        prepare_div2k.main(['--hr', str(hr_dir), '--out', out, '--scales', '4', '--crop-size', '18'])


# ------------------------------------------------------------------------------------------------ benchmarks
@pytest.fixture()
def bench_src(tmp_path):
    """EDSR archive layout for Set5 (HR + shipped LR x2), a plain JPEG folder for BSD100, odd sizes everywhere."""
    src = tmp_path / 'benchmark'
    images = {
        ('Set5', 'bird'): write(str(src / 'Set5' / 'HR' / 'bird.png'), make_image(31, 25, seed=20)),
        ('Set5', 'gray'): write(str(src / 'Set5' / 'HR' / 'gray.png'), make_image(24, 18, seed=21, gray=True)),
    }
    shipped = {
        'bird': write(str(src / 'Set5' / 'LR_bicubic' / 'X2' / 'birdx2.png'), make_image(15, 12, seed=22)),
        'gray': write(str(src / 'Set5' / 'LR_bicubic' / 'X2' / 'grayx2.png'), make_image(12, 9, seed=23, gray=True)),
    }
    write(str(src / 'BSD100' / '3096.jpg'), make_image(29, 35, seed=24))
    images[('B100', '3096')] = cv2.imread(str(src / 'BSD100' / '3096.jpg'), cv2.IMREAD_UNCHANGED)
    return src, images, shipped


def test_benchmarks_layout_exact_lr_and_shipped_lr(bench_src, tmp_path):
    src, images, shipped = bench_src
    out = str(tmp_path / 'Benchmark_SR')
    outputs = prepare_benchmarks.main(['--src', str(src), '--out', out, '--scales', '2', '3', '--workers', '1'])
    assert len(outputs) == 6 and {output.status for output in outputs} == {'built'}
    assert sorted(os.listdir(out)) == ['B100', 'Set5']
    assert sorted(os.listdir(osp.join(out, 'Set5', 'LR_bicubic', 'X3'))) == ['birdx3.png', 'grayx3.png']
    # PNG sources and shipped LR files are copied byte for byte
    assert open(osp.join(out, 'Set5', 'HR', 'bird.png'), 'rb').read() == open(src / 'Set5/HR/bird.png', 'rb').read()
    for name, lr in shipped.items():
        np.testing.assert_array_equal(cv2.imread(osp.join(out, 'Set5', 'LR_bicubic', 'X2', f'{name}x2.png'),
                                                 cv2.IMREAD_UNCHANGED), lr)
    # LR made here equals imresize of the HR cropped to a multiple of the scale, exactly
    for (set_name, name), hr in images.items():
        stored = cv2.imread(osp.join(out, set_name, 'HR', f'{name}.png'), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(stored, hr)  # whole, JPEG decoded once
        for scale in (3, ) if set_name == 'Set5' else (2, 3):
            lr = cv2.imread(osp.join(out, set_name, 'LR_bicubic', f'X{scale}', f'{name}x{scale}.png'),
                            cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(lr, matlab_lr(mod_crop(hr, scale), scale))
    dataset = paired_dataset(osp.join(out, 'B100', 'HR'), osp.join(out, 'B100', 'LR_bicubic', 'X3'), 3, '{}x3')
    item = dataset[0]
    assert len(dataset) == 1 and item['lq'].shape == (3, 9, 11) and item['gt'].shape == (3, 27, 33)

    before = snapshot(out)
    again = prepare_benchmarks.main(['--src', str(src), '--out', out, '--scales', '2', '3', '--workers', '2'])
    assert {output.status for output in again} == {'skipped'} and snapshot(out) == before


def test_benchmarks_lcm_mode_and_errors(bench_src, tmp_path):
    src, images, _ = bench_src
    out = str(tmp_path / 'lcm')
    prepare_benchmarks.main(['--src', str(src / 'BSD100'), '--out', out, '--scales', '2', '3', '--modcrop', 'lcm',
                             '--workers', '1'])
    hr = cv2.imread(osp.join(out, 'B100', 'HR', '3096.png'), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(hr, images[('B100', '3096')][:24, :30])  # 29x35 cropped to multiples of 6
    lr2 = cv2.imread(osp.join(out, 'B100', 'LR_bicubic', 'X2', '3096x2.png'), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(lr2, matlab_lr(hr, 2))
    write(str(src / 'Set5' / 'LR_bicubic' / 'X2' / 'birdx2.png'), make_image(14, 12, seed=0))
    with pytest.raises(OptionError, match=r'birdx2\.png is 14x12, expected 15x12 .*--regenerate-lr'):
        prepare_benchmarks.main(['--src', str(src), '--out', str(tmp_path / 'bad'), '--scales', '2'])
    write(str(src / 'Set5' / 'LR_bicubic' / 'X2' / 'birdx2.png'), make_image(15, 12, seed=0))
    os.remove(src / 'Set5' / 'LR_bicubic' / 'X2' / 'grayx2.png')
    with pytest.raises(OptionError, match=r'X2 has no LR image for gray .*--regenerate-lr'):
        prepare_benchmarks.main(['--src', str(src), '--out', str(tmp_path / 'bad'), '--scales', '2'])
    outputs = prepare_benchmarks.main(['--src', str(src), '--out', str(tmp_path / 'regen'), '--scales', '2',
                                       '--regenerate-lr', '--sets', 'set5', '--workers', '1'])
    assert [output.path for output in outputs] == [osp.join(str(tmp_path), 'regen', 'Set5', 'HR'),
                                                   osp.join(str(tmp_path), 'regen', 'Set5', 'LR_bicubic', 'X2')]
    with pytest.raises(OptionError, match='no benchmark sets found'):
        os.makedirs(tmp_path / 'nothing' / 'Set5')
        prepare_benchmarks.main(['--src', str(tmp_path / 'nothing'), '--out', str(tmp_path / 'bad')])


# ----------------------------------------------------------------------------------------- GoPro and deraining
def test_gopro_official_layout_to_folders_and_crop_lmdbs(tmp_path):
    src = tmp_path / 'GOPRO_Large'
    frames, seed = {}, 0
    for split, sequence in (('train', 'GOPR0372_07_00'), ('train', 'GOPR0374_11_01'), ('test', 'GOPR0384_11_00')):
        for frame in ('000047', '000048'):
            for kind in ('blur', 'sharp'):
                seed += 1
                frames[(sequence, frame, kind)] = write(str(src / split / sequence / kind / f'{frame}.png'),
                                                        make_image(40, 56, seed=seed))
    out = str(tmp_path / 'GoPro')
    args = ['--src', str(src), '--out', out, '--crops', '--crop-size', '16', '--step', '12', '--workers', '1']
    # every set is planned before any is built: a crop larger than the frames stops the run with nothing written
    with pytest.raises(OptionError, match=r'GOPR0372_07_00/blur/000047\.png is 40x56, smaller than the crop size 48'):
        prepare_gopro.main(args[:-5] + ['48', '--step', '12', '--workers', '1'])
    assert not osp.exists(out)
    outputs = prepare_gopro.main(args + ['--train-format', 'lmdb'])
    assert sorted(os.listdir(out)) == ['test', 'train', 'train_crops']
    assert sorted(os.listdir(osp.join(out, 'train'))) == ['input.lmdb', 'target.lmdb']
    assert sorted(os.listdir(osp.join(out, 'test', 'input'))) == ['GOPR0384_11_00_000047.png',
                                                                  'GOPR0384_11_00_000048.png']
    source = src / 'test' / 'GOPR0384_11_00' / 'sharp' / '000048.png'
    assert open(osp.join(out, 'test', 'target', 'GOPR0384_11_00_000048.png'), 'rb').read() == source.read_bytes()
    np.testing.assert_array_equal(lmdb_image(osp.join(out, 'train', 'input.lmdb'), 'GOPR0374_11_01_000047'),
                                  frames[('GOPR0374_11_01', '000047', 'blur')])
    # 40x56 frames, crop 16 step 12: 3 rows x 5 columns, s015 is flush with the bottom-right corner
    crops = read_lmdb_meta(osp.join(out, 'train_crops', 'target.lmdb'))
    assert len(crops) == 4 * 15 and crops[0] == ('GOPR0372_07_00_000047_s001', (16, 16, 3))
    np.testing.assert_array_equal(lmdb_image(osp.join(out, 'train_crops', 'target.lmdb'), 'GOPR0372_07_00_000048_s015'),
                                  frames[('GOPR0372_07_00', '000048', 'sharp')][24:, 40:])
    assert [output.status for output in outputs] == ['built'] * 6
    assert {o.status for o in prepare_gopro.main(args + ['--train-format', 'lmdb'])} == {'skipped'}

    os.remove(src / 'train' / 'GOPR0374_11_01' / 'sharp' / '000048.png')
    with pytest.raises(OptionError, match=r'GOPR0374_11_01/blur/000048\.png has no partner in .*/sharp'):
        prepare_gopro.main(args + ['--overwrite'])
    write(str(src / 'train' / 'GOPR0374_11_01' / 'sharp' / '000048.png'), make_image(40, 52, seed=0))
    with pytest.raises(OptionError, match=r'blur/000048\.png is 40x56 but .*sharp/000048\.png is 40x52'):
        prepare_gopro.main(args + ['--overwrite'])


def test_derain_pairs_convert_jpeg_and_name_unpaired_files(tmp_path):
    train = tmp_path / 'Datasets' / 'train' / 'Rain13K'
    write(str(train / 'input' / '1.jpg'), make_image(20, 24, seed=30))
    rainy = cv2.imread(str(train / 'input' / '1.jpg'), cv2.IMREAD_UNCHANGED)
    write(str(train / 'target' / '1.png'), make_image(20, 24, seed=31))
    for name in ('Rain100L', 'test100'):
        write(str(tmp_path / 'Datasets' / 'test' / name / 'input' / 'a.png'), make_image(16, 12, seed=32))
        write(str(tmp_path / 'Datasets' / 'test' / name / 'target' / 'a.png'), make_image(16, 12, seed=33))
    out = str(tmp_path / 'datasets')
    # --pad-to 22: the 20x24 training pair is reflect-padded to 22 rows (as gt_size 22 crops need); tests are not
    prepare_derain.main(['--train', str(train), '--test', str(tmp_path / 'Datasets' / 'test'), '--out', out,
                         '--workers', '1', '--pad-to', '22'])
    assert sorted(os.listdir(osp.join(out, 'Derain'))) == ['Rain100L', 'Test100']
    assert os.listdir(osp.join(out, 'Rain13K', 'train', 'input')) == ['1.png']  # same extension as the target
    padded = cv2.imread(osp.join(out, 'Rain13K', 'train', 'input', '1.png'))
    np.testing.assert_array_equal(padded[:20], rainy)
    np.testing.assert_array_equal(padded[20:], rainy[[19, 18]])  # reflection: row 20 = row 19, row 21 = row 18
    dataset = paired_dataset(osp.join(out, 'Rain13K', 'train', 'target'),
                                    osp.join(out, 'Rain13K', 'train', 'input'), 1)
    assert len(dataset) == 1 and dataset[0]['lq'].shape == (3, 22, 24)
    assert cv2.imread(osp.join(out, 'Derain', 'Rain100L', 'input', 'a.png')).shape[:2] == (16, 12)

    write(str(tmp_path / 'Datasets' / 'test' / 'Rain100L' / 'target' / 'b.png'), make_image(16, 12, seed=34))
    with pytest.raises(OptionError, match=r'Rain100L/target/b\.png has no partner in .*Rain100L/input'):
        prepare_derain.main(['--test', str(tmp_path / 'Datasets' / 'test'), '--out', out, '--overwrite'])


# ------------------------------------------------------------------------------------------ demo and scripts
def test_make_demo_data(tmp_path):
    out = str(tmp_path / 'demo')
    outputs = make_demo_data.main(['--out', out, '--workers', '2'])
    assert [output.status for output in outputs] == ['built'] * 6
    assert sorted(os.listdir(osp.join(out, 'DIV2K'))) == ['DIV2K_train_HR_sub.lmdb',
                                                          'DIV2K_train_LR_bicubic_X2_sub.lmdb',
                                                          'DIV2K_train_LR_bicubic_X4_sub.lmdb']
    meta = read_lmdb_meta(osp.join(out, 'DIV2K', 'DIV2K_train_LR_bicubic_X4_sub.lmdb'))
    assert len(meta) == 178 and {shape for _, shape in meta} == {(48, 48, 3)}
    train_photos = {key.rsplit('_s', 1)[0] for key, _ in meta}
    assert train_photos == {'astronaut', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry'}
    test_dir = osp.join(out, 'Benchmark_SR', 'Demo')
    assert sorted(os.listdir(osp.join(test_dir, 'HR'))) == ['camera.png', 'chelsea.png', 'motorcycle.png']
    assert sorted(os.listdir(osp.join(test_dir, 'LR_bicubic', 'X4'))) == ['camerax4.png', 'chelseax4.png',
                                                                          'motorcyclex4.png']
    dataset = paired_dataset(osp.join(test_dir, 'HR'), osp.join(test_dir, 'LR_bicubic', 'X2'), 2, '{}x2')
    shapes = {osp.basename(item['gt_path']): (item['gt'].shape, item['lq'].shape) for item in dataset}
    assert shapes == {'camera.png': ((3, 512, 512), (3, 256, 256)), 'chelsea.png': ((3, 300, 450), (3, 150, 225)),
                      'motorcycle.png': ((3, 500, 740), (3, 250, 370))}

    before = snapshot(out)
    assert {output.status for output in make_demo_data.main(['--out', out, '--workers', '1'])} == {'skipped'}
    assert snapshot(out) == before
    # another scale adds its LR next to the same HR (the photos are cropped to multiples of 12 whatever the scales)
    statuses = {osp.basename(o.path): o.status for o in make_demo_data.main(['--out', out, '--scales', '3'])}
    assert statuses == {'DIV2K_train_HR_sub.lmdb': 'skipped', 'DIV2K_train_LR_bicubic_X3_sub.lmdb': 'built',
                        'HR': 'skipped', 'X3': 'built'}


@pytest.mark.slow
def test_script_runs_from_the_command_line_and_reports_bad_input_in_one_line(tmp_path):
    os.makedirs(tmp_path / 'src' / 'Set5' / 'HR')
    script = osp.join(ROOT, 'datasets_prep', 'prepare_benchmarks.py')
    run = subprocess.run([sys.executable, script, '--src', str(tmp_path / 'src'), '--out', str(tmp_path / 'out')],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip() == f'prepare_benchmarks.py: error: {tmp_path / "src" / "Set5" / "HR"}: no images found ' \
        f'(expected {", ".join(IMG_EXTENSIONS)} files).'
    assert not osp.exists(tmp_path / 'out')


def test_verify_decodes_every_record_and_lists_the_bad_keys(tmp_path, capsys):
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    folder = tmp_path / 'photos'
    for index in range(4):
        write(str(folder / f'{index:04d}.png'), make_image(24, 24, seed=index))
    db = str(tmp_path / 'photos.lmdb')
    make_lmdb_from_imgs(str(folder), db, [f'{i:04d}.png' for i in range(4)], [f'{i:04d}' for i in range(4)],
                        map_size=1 << 24)
    capsys.readouterr()  # make_lmdb_from_imgs's own lines
    assert verify.main(['--verify', db, str(folder)]) == 0
    assert capsys.readouterr().out == f'{db}: all 4 records decode.\n{folder}: all 4 records decode.\n'

    env = lmdb.open(db, map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b'0001', b'not a PNG')
        txn.delete(b'0003')
    env.close()
    png = (folder / '0002.png').read_bytes()
    (folder / '0002.png').write_bytes(png[:len(png) // 2])  # a truncated download
    assert verify.main(['--verify', db, str(folder)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f'{db}: 2 of 4 records cannot be decoded:',
        '  0001: 9 bytes that OpenCV cannot decode as an image (corrupt or truncated)',
        '  0003: listed in meta_info.txt but missing from data.mdb',
        f'{folder}: 1 of 4 records cannot be decoded:',
        f'  0002.png: {len(png) // 2} bytes that OpenCV cannot decode as an image (corrupt or truncated)']
    script = subprocess.run([sys.executable, osp.join(ROOT, 'datasets_prep', 'verify.py'), '--verify',
                             str(tmp_path / 'none')], capture_output=True, text=True)
    assert script.returncode == 2
    assert script.stderr.strip() == f'verify.py: error: --verify {tmp_path / "none"}: neither an LMDB nor a folder.'

