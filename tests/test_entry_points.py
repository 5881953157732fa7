"""Every way a user trains and tests with the plugin installed, each in a fresh interpreter outside the repo."""
import importlib.util
from pathlib import Path

import pytest
import torch

from helpers import BIN, PYTHON, REPO, dckd_train_options, free_port, run, sr_train_options, write_options

pytestmark = pytest.mark.slow  # every test here trains in fresh interpreters, over 5 s each

BASICSR_DIR = Path(importlib.util.find_spec('basicsr').origin).parent

TRAIN_COMMANDS = {
    'python -m basicsr.train': [PYTHON, '-m', 'basicsr.train'],
    'python -m dckd_basicsr.train': [PYTHON, '-m', 'dckd_basicsr.train'],
    'python dckd_basicsr/train.py': [PYTHON, str(REPO / 'dckd_basicsr' / 'train.py')],
    'dckd-train': [str(BIN / 'dckd-train')],
    # A BasicSR clone's `python basicsr/train.py`: the script runs as __main__ with BasicSR's own functions.
    'python basicsr/train.py': [PYTHON, str(BASICSR_DIR / 'train.py')],
}


def _weights(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=True)


def test_all_train_entry_points_give_identical_dckd_weights(tmp_path, toy_data):
    """Same seed, same data: every entry point runs the same DCKD pipeline, so the weights agree bit for bit."""
    opt = dckd_train_options(tmp_path, toy_data, name='toy')
    results = {}
    for index, (label, command) in enumerate(TRAIN_COMMANDS.items()):
        cwd = tmp_path / f'cwd{index}'
        cwd.mkdir()
        proc = run(command + ['-opt', write_options(tmp_path / f'train{index}.yml', opt)], cwd=cwd)
        assert 'Model [DCKDModel] is created.' in proc.stdout + proc.stderr, label
        models = cwd / 'experiments' / 'toy' / 'models'
        assert {'net_g_5.pth', 'net_g_10.pth', 'net_his_10.pth', 'net_g_latest.pth'} <= {
            p.name for p in models.iterdir()}, label
        results[label] = {'g': _weights(models / 'net_g_10.pth'), 'his': _weights(models / 'net_his_10.pth')}
    reference = results.pop('python -m basicsr.train')
    for label, weights in results.items():
        for net in ('g', 'his'):
            for key, state in reference[net].items():
                for name, tensor in state.items():
                    assert torch.equal(tensor, weights[net][key][name]), f'{label}: net_{net} {key}.{name} differs'
    # and training changed the network: the student is not its EMA, which is not its initialisation
    student = reference['g']
    assert not torch.equal(student['params']['conv_first.weight'], student['params_ema']['conv_first.weight'])


def test_run_folders_under_cwd_never_site_packages(tmp_path, toy_data):
    opt_file = write_options(tmp_path / 'train.yml', sr_train_options(toy_data, name='where', total_iter=2,
                                                                      logger__save_checkpoint_freq=2))
    run([PYTHON, '-m', 'basicsr.train', '-opt', opt_file], cwd=tmp_path)
    assert (tmp_path / 'experiments' / 'where' / 'models' / 'net_g_2.pth').is_file()
    assert not (BASICSR_DIR.parent / 'experiments' / 'where').exists()
    # --force_yml can set the parent folder too
    run([PYTHON, '-m', 'basicsr.train', '-opt', opt_file, '--force_yml', f'path:experiments_root={tmp_path / "fy"}'],
        cwd=tmp_path)
    assert (tmp_path / 'fy' / 'where' / 'models' / 'net_g_2.pth').is_file()


def test_experiments_root_and_results_root_are_parent_folders(tmp_path, toy_data):
    runs, results = tmp_path / 'my_runs', tmp_path / 'my_results'
    opt = sr_train_options(toy_data, name='rooted', total_iter=2, logger__save_checkpoint_freq=2,
                           path__experiments_root=str(runs))
    run([PYTHON, '-m', 'dckd_basicsr.train', '-opt', write_options(tmp_path / 'train.yml', opt)], cwd=tmp_path)
    checkpoint = runs / 'rooted' / 'models' / 'net_g_2.pth'
    assert checkpoint.is_file() and not (tmp_path / 'experiments').exists()

    test_opt = {
        'name': 'rooted_test', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0,
        'datasets': {'test_1': dict(opt['datasets']['val'], name='toytest')},
        'network_g': opt['network_g'],
        'path': {'pretrain_network_g': str(checkpoint), 'param_key_g': 'params_ema', 'strict_load_g': True,
                 'results_root': str(results)},
        'val': {'save_img': True, 'suffix': None, 'metrics': opt['val']['metrics']},
    }
    for index, command in enumerate(([PYTHON, '-m', 'basicsr.test'], [PYTHON, '-m', 'dckd_basicsr.test'],
                                     [str(BIN / 'dckd-test')])):
        test_opt['name'] = f'rooted_test{index}'
        cwd = tmp_path / f'test_cwd{index}'
        cwd.mkdir()
        proc = run(command + ['-opt', write_options(tmp_path / f'test{index}.yml', test_opt)], cwd=cwd)
        images = sorted(p.name for p in (results / f'rooted_test{index}' / 'visualization' / 'toytest').iterdir())
        assert images == [f'{i:04d}_rooted_test{index}.png' for i in range(4)]
        assert not (cwd / 'results').exists()
        assert '# psnr:' in proc.stdout + proc.stderr


def _adam_steps(state_file: Path) -> int:
    state = torch.load(state_file, map_location='cpu', weights_only=True)
    return int(next(iter(state['optimizers'][0]['state'].values()))['step'])


def test_resume_from_state_on_cpu_continues_at_the_right_iteration(tmp_path, toy_data):
    opt = sr_train_options(toy_data, name='resumed', total_iter=5)
    run([PYTHON, '-m', 'basicsr.train', '-opt', write_options(tmp_path / 'a.yml', opt)], cwd=tmp_path)
    states = tmp_path / 'experiments' / 'resumed' / 'training_states'
    opt['train']['total_iter'] = 10
    opt['path']['resume_state'] = str(states / '5.state')
    proc = run([PYTHON, '-m', 'basicsr.train', '-opt', write_options(tmp_path / 'b.yml', opt)], cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert 'Resuming training from epoch: 2, iter: 5.' in log
    assert 'Start training from epoch: 2, iter: 5' in log
    # the optimizer state was restored: Adam has taken 10 steps, not 5
    assert _adam_steps(states / '10.state') == 10
    assert torch.load(states / '10.state', weights_only=True)['iter'] == 10


def test_auto_resume_from_another_working_directory(tmp_path, toy_data):
    runs = tmp_path / 'runs'
    opt = sr_train_options(toy_data, name='auto', total_iter=5, path__experiments_root=str(runs))
    first, second = tmp_path / 'first', tmp_path / 'second'
    first.mkdir()
    second.mkdir()
    run([PYTHON, '-m', 'dckd_basicsr.train', '-opt', write_options(first / 'a.yml', opt)], cwd=first)
    opt['train']['total_iter'] = 10
    proc = run([PYTHON, '-m', 'basicsr.train', '-opt', write_options(second / 'a.yml', opt), '--auto_resume'],
               cwd=second)
    assert 'Start training from epoch: 2, iter: 5' in proc.stdout + proc.stderr
    assert _adam_steps(runs / 'auto' / 'training_states' / '10.state') == 10


def test_clone_style_train_script_resumes_on_cpu_like_an_uninterrupted_run(tmp_path, toy_data):
    """A BasicSR clone's ``python basicsr/train.py --auto_resume`` runs the plugin's resume (CPU, the data position,
    the history model): 3 iterations, then auto-resume to 8, give the weights of a run of 8 iterations."""
    script = TRAIN_COMMANDS['python basicsr/train.py']
    opt = dckd_train_options(tmp_path, toy_data, name='whole', total_iter=8)
    opt['logger']['save_checkpoint_freq'] = 3
    run(script + ['-opt', write_options(tmp_path / 'whole.yml', opt)], cwd=tmp_path)
    opt.update(name='part')
    opt['train']['total_iter'] = 3
    run(script + ['-opt', write_options(tmp_path / 'part.yml', opt)], cwd=tmp_path)
    opt['train']['total_iter'] = 8
    proc = run(script + ['-opt', write_options(tmp_path / 'part_resume.yml', opt), '--auto_resume'], cwd=tmp_path)
    assert 'Resuming training from epoch: 1, iter: 3.' in proc.stdout + proc.stderr
    runs = tmp_path / 'experiments'
    for name in ('net_g_latest.pth', 'net_his_latest.pth'):
        whole, part = _weights(runs / 'whole' / 'models' / name), _weights(runs / 'part' / 'models' / name)
        for key, state in whole.items():
            for param, tensor in state.items():
                assert torch.equal(tensor, part[key][param]), f'{name} {key}.{param}'
    assert _adam_steps(runs / 'part' / 'training_states' / '6.state') == 6


TORCHRUN_SCRIPT = '''
import os, sys, torch
import dckd_basicsr  # noqa: F401
import basicsr.train
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY


@MODEL_REGISTRY.register()
class RankDumpSRModel(SRModel):
    """SRModel that also writes each rank's final weights, so the test can compare ranks."""

    def save(self, epoch, current_iter):
        super().save(epoch, current_iter)
        if current_iter == -1:
            net = self.get_bare_model(self.net_g)
            torch.save({'params': net.state_dict(), 'params_ema': self.net_g_ema.state_dict(),
                        'wrapped': type(self.net_g).__name__},
                       os.path.join(self.opt['path']['models'], f'rank{self.opt["rank"]}.pth'))


basicsr.train.train_pipeline(os.getcwd())
'''


@pytest.mark.skipif(not hasattr(torch.distributed, 'is_gloo_available') or not torch.distributed.is_gloo_available(),
                    reason='this torch build has no gloo backend')
def test_torchrun_two_cpu_processes_end_with_identical_weights(tmp_path, toy_data):
    script = tmp_path / 'train_dump.py'
    script.write_text(TORCHRUN_SCRIPT)
    opt = sr_train_options(toy_data, name='ddp', model_type='RankDumpSRModel')
    opt_file = write_options(tmp_path / 'ddp.yml', opt)
    run([str(BIN / 'torchrun'), '--nproc_per_node', '2', '--master_port', free_port(), str(script), '-opt', opt_file,
         '--launcher', 'pytorch'], cwd=tmp_path, timeout=300)
    models = tmp_path / 'experiments' / 'ddp' / 'models'
    rank0, rank1 = (torch.load(models / f'rank{r}.pth', weights_only=True) for r in (0, 1))
    assert rank0['wrapped'] == rank1['wrapped'] == 'DistributedDataParallel'
    for key in ('params', 'params_ema'):
        assert rank0[key].keys() == rank1[key].keys()
        for name in rank0[key]:
            assert torch.equal(rank0[key][name], rank1[key][name]), f'{key}.{name} differs between ranks'
    # each rank saw different samples, yet the all-reduced gradients kept them equal; and they did train
    initial = torch.load(models / 'net_g_5.pth', weights_only=True)['params']['conv_first.weight']
    assert not torch.equal(initial, rank0['params']['conv_first.weight'])


@pytest.mark.parametrize('command, update, expected', [
    ([PYTHON, '-m', 'basicsr.train'], {'model_type': 'DCKModel'},
     ["model_type: no model named 'DCKModel' is registered.", 'Did you mean: DCKDModel',
      'All registered model names:']),
    ([PYTHON, '-m', 'dckd_basicsr.train'], {'network_g__type': 'MSRResNett'},
     ["network_g.type: no arch named 'MSRResNett'", 'Did you mean: MSRResNet?', 'dckd-basicsr arch names: ']),
    ([PYTHON, '-m', 'basicsr.train'], {'train__pixel_opt__type': 'L1Los'},
     ["train.pixel_opt.type: no loss named 'L1Los'", 'L1Loss', 'dckd-basicsr loss names: ']),
])
def test_user_mistakes_get_one_clear_message(tmp_path, toy_data, command, update, expected):
    opt = sr_train_options(toy_data, **update)
    proc = run(command + ['-opt', write_options(tmp_path / 'bad.yml', opt)], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    for text in expected:
        assert text in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_missing_files_and_gpu_settings_are_named(tmp_path, toy_data):
    proc = run([PYTHON, '-m', 'dckd_basicsr.train', '-opt', str(tmp_path / 'nope.yml')], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and 'nope.yml: no such option file' in proc.stderr

    opt = sr_train_options(toy_data, datasets__train__dataroot_lq=str(tmp_path / 'missing_lq'))
    proc = run([PYTHON, '-m', 'basicsr.train', '-opt', write_options(tmp_path / 'm.yml', opt)], cwd=tmp_path,
               check=False)
    assert proc.returncode == 2 and 'datasets.train.dataroot_lq:' in proc.stderr and 'Traceback' not in proc.stderr

    if not torch.cuda.is_available():
        opt = sr_train_options(toy_data, num_gpu=1)
        proc = run([PYTHON, '-m', 'basicsr.train', '-opt', write_options(tmp_path / 'g.yml', opt)], cwd=tmp_path,
                   check=False)
        assert proc.returncode == 2 and 'set num_gpu: 0 (CPU) or num_gpu: auto' in proc.stderr


def test_plugin_runs_without_the_hook_when_imported_explicitly(tmp_path, toy_data):
    """DCKD_BASICSR_NO_HOOK turns the hook off; `python -m dckd_basicsr.train` still registers and patches."""
    opt_file = write_options(tmp_path / 't.yml', sr_train_options(toy_data, name='nohook', total_iter=2,
                                                                    logger__save_checkpoint_freq=2))
    run([PYTHON, '-m', 'dckd_basicsr.train', '-opt', opt_file], cwd=tmp_path, env={'DCKD_BASICSR_NO_HOOK': '1'})
    assert (tmp_path / 'experiments' / 'nohook' / 'models' / 'net_g_2.pth').is_file()
