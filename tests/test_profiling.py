"""dckd-profile (dckd_basicsr/commands/profile.py): parameter counts checked against hand counts, FLOPs of one
convolution against the formula, the markdown table with its teacher/student ratios, skipped teachers, grouped option
files."""
import re

import pytest
import torch
from helpers import BIN, run, tiny_network, write_options

from dckd_basicsr.commands import profile as profiling
from dckd_basicsr.commands.measurement import measure, measure_module
from dckd_basicsr.commands.profile import main

TEACHER = tiny_network('msrresnet', num_feat=8, num_block=2)
STUDENT = tiny_network('msrresnet', num_feat=4, num_block=1)


def test_hand_counts():
    # MSRResNet x2, 3x3 convs (9 * cin * cout weights + cout biases): conv_first 3->f, two convs f->f per block,
    # upconv1 f->4f, conv_hr f->f, conv_last f->3.
    # f = 4, 1 block: 112 + 296 + 592 + 148 + 111 = 1259; f = 8, 2 blocks: 224 + 2 * 1168 + 2336 + 584 + 219 = 5699
    assert measure(STUDENT, size=8, runs=0, memory=False).params == 1259
    assert measure(TEACHER, size=8, runs=0, memory=False).params == 5699


def test_conv_flops_match_the_formula():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    m = measure_module(conv, torch.rand(1, 3, 16, 12), runs=2, warmup=1, memory=False)
    assert m.flops == 2 * 16 * 12 * 8 * 3 * 3 * 3  # 2 per multiply-add; the bias is not counted
    assert m.params == 3 * 3 * 3 * 8 + 8
    assert m.output_shape == (1, 8, 16, 12) and m.latency_ms > 0


@pytest.fixture
def in_process(monkeypatch):
    """Measure in this process (the CLI starts one process per network; the slow test below covers that path)."""

    def measure_here(net_opt, size, threads, runs, warmup, memory=True, where=''):
        return measure(net_opt, size, threads, runs, warmup, memory=False)

    monkeypatch.setattr(profiling, 'measure_in_subprocess', measure_here)


def test_table_rows_ratios_notes_and_grouping(tmp_path, in_process):
    folder = tmp_path / 'options'
    write_options(folder / 'a' / 'train_toy_DCKD.yml', {'network_g': STUDENT, 'network_t': TEACHER})
    write_options(folder / 'a' / 'train_toy_Logits.yml', {'network_g': STUDENT, 'network_t': TEACHER})
    write_options(folder / 'b' / 'train_toy_Scratch.yml', {'network_g': STUDENT})
    write_options(folder / 'b' / 'train_toy_Spandrel.yml', {'network_g': STUDENT, 'network_t': {
        'type': 'SpandrelTeacher'}, 'path': {'pretrain_network_t': 'teacher.safetensors'}})
    table = main(['--all', str(folder), '--size', '8', '--runs', '1', '-o', str(tmp_path / 'table.md')])
    assert (tmp_path / 'table.md').read_text() == table
    lines = table.splitlines()
    teacher = next(line for line in lines if '| teacher | MSRResNet x2 |' in line)
    assert 'train_toy_DCKD.yml (+1 with the same networks)' in teacher and '| 5,699 |' in teacher
    ratio = next(line for line in lines if '| teacher/student |' in line)
    assert '| 4.53x |' in ratio  # 5699 / 1259 parameters
    assert sum('| student | MSRResNet x2 | 1,259 |' in line for line in lines) == 3
    assert any(line.startswith('- train_toy_Spandrel.yml: teacher skipped: SpandrelTeacher') for line in lines)
    # FLOPs, 2 per multiply-add: the student's convs at 8x8 LQ, 64 * 9 * (3 * 4 + 2 * 4 * 4 + 4 * 16) = 62,208, and
    # the two HR convs at 16x16, 256 * 9 * (4 * 4 + 4 * 3) = 64,512: 2 * 126,720
    assert measure(STUDENT, size=8, runs=0, memory=False).flops == 253_440


def test_paper_column_for_table1_networks(tmp_path, in_process):
    from helpers import TABLE1
    student = TABLE1[('RCAN', 'student')][0]
    table = main(['-opt', write_options(tmp_path / 'rcan.yml', {'network_g': student}), '--size', '4', '--runs', '0'])
    assert '| student | RCAN x4 | 5,171,315 | 5.2M |' in table


def test_missing_option_file_is_named(tmp_path):
    with pytest.raises(Exception, match=r'-opt .*nope\.yml: no such file'):
        main(['-opt', str(tmp_path / 'nope.yml')])


@pytest.mark.slow
def test_console_script_measures_in_a_fresh_process(tmp_path):
    option_file = write_options(tmp_path / 'toy.yml', {'network_g': STUDENT})
    proc = run([str(BIN / 'dckd-profile'), '-opt', option_file, '--size', '16', '--runs', '2', '-o',
                str(tmp_path / 't.md')], cwd=tmp_path)
    row = next(line for line in proc.stdout.splitlines() if line.startswith('| toy.yml | student | MSRResNet x2 |'))
    latency, memory = re.search(r'\| ([\d.]+) \| ([\d.]+) \|$', row).groups()
    assert '| 1,259 |' in row and float(latency) > 0 and float(memory) >= 0
    assert (tmp_path / 't.md').read_text() in proc.stdout + '\n'
