"""The command lines of dckd-train / dckd-test: their own help and error prefix, and what a short run prints."""
import re

import pytest

from helpers import BIN, PYTHON, run, sr_train_options, write_options
from dckd_basicsr.integration.command_line import command_line_parser


def test_train_and_test_parsers_have_their_own_descriptions_and_flags():
    train = command_line_parser(True, 'dckd-train').format_help()
    test = command_line_parser(False, 'dckd-test').format_help()
    assert train.startswith('usage: dckd-train ') and test.startswith('usage: dckd-test ')
    assert "Train with BasicSR's pipeline and the dckd-basicsr plugin" in train
    assert "Test with BasicSR's pipeline and the dckd-basicsr plugin" in test
    for flag in ('--auto_resume', '--smoke', '--stand-in', '--force_yml', '--launcher', '--debug'):
        assert flag in train, flag
    for flag in ('--auto_resume', '--smoke', '--stand-in'):
        assert flag not in test, flag
    assert '--local_rank' not in train  # accepted from launchers, not advertised
    assert command_line_parser(True).parse_args(['-opt', 'x.yml', '--local-rank', '3']).local_rank == 3


@pytest.mark.slow
def test_installed_commands_print_their_help_and_prefix_their_errors(tmp_path):
    proc = run([str(BIN / 'dckd-test'), '--help'], cwd=tmp_path)
    assert proc.stdout.startswith('usage: dckd-test ') and '--auto_resume' not in proc.stdout
    proc = run([str(BIN / 'dckd-train'), '-opt', 'nope.yml'], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == 'dckd-train: error: -opt nope.yml: no such option file.'


@pytest.mark.slow
def test_python_m_basicsr_train_is_quiet_caps_workers_and_reports_the_last_iteration(tmp_path, toy_data):
    """No runpy warning, one line for the capped workers, and a 3-iteration run's best PSNR is "@ 3 iter" (BasicSR
    labelled its final validation total_iter + 2)."""
    opt = sr_train_options(toy_data, name='quiet', total_iter=3, datasets__train__num_worker_per_gpu=64,
                           val__val_freq=100, logger__print_freq=1)
    proc = run([PYTHON, '-m', 'basicsr.train', '-opt', write_options(tmp_path / 'q.yml', opt)], cwd=tmp_path)
    assert 'found in sys.modules' not in proc.stderr and 'RuntimeWarning' not in proc.stderr
    assert re.search(r'datasets.train.num_worker_per_gpu: 64 capped at \d+, the CPUs this process may use.',
                     proc.stdout)
    log = next((tmp_path / 'experiments' / 'quiet').glob('train_*.log')).read_text()
    assert re.search(r'# psnr: [\d.]+\tBest: [\d.]+ @ 3 iter', log)
    assert '@ 4 iter' not in log and '@ 5 iter' not in log
