"""Training that survives: a SIGKILL after a checkpoint and ``--auto_resume`` give the uninterrupted run's weights bit
for bit; a kill during a save never leaves a file resume would pick; NaN/Inf losses skip the step; bad input stops
with one message naming the option or file."""
import errno
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from basicsr.models import build_model
from basicsr.models.base_model import BaseModel

import dckd_basicsr  # noqa: F401
from helpers import (PYTHON, basicsr_messages, batch, dckd_train_options, in_process, make_pairs, run,
                      save_random_network, sr_train_options, write_options)
from dckd_basicsr.errors import CheckpointWriteError, OptionError
from dckd_basicsr.integration.option_checks import check_options
from dckd_basicsr.training.resume import latest_training_state

# ---------------------------------------------------------------------------------------------------------------------
# 1. Kill after a checkpoint, resume, compare with the uninterrupted run
# ---------------------------------------------------------------------------------------------------------------------

# `python -m dckd_basicsr.train` whose iteration KILL_AT, once computed (weights changed in memory, not saved), writes
# a marker and hangs, so the test can SIGKILL it mid-run at a known point after the last checkpoint.
HANG_DRIVER = '''
import os, sys, time
from dckd_basicsr.models.kd_model import KDModel
from dckd_basicsr.train import main

original = KDModel.optimize_parameters


def optimize_parameters(self, current_iter):
    original(self, current_iter)
    if current_iter == int(os.environ['KILL_AT']):
        open(os.environ['MARKER'], 'w').close()
        time.sleep(120)


KDModel.optimize_parameters = optimize_parameters
sys.argv = ['dckd_basicsr.train'] + sys.argv[1:]
main()
'''


def _env(**extra: str) -> dict:
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', **extra)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f'the run ended ({proc.returncode}) before {path.name}:\n{proc.stderr.read()[-3000:]}')
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f'{path} never appeared')
        time.sleep(0.05)


def _assert_same_files(a: Path, b: Path) -> None:
    left, right = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert left.keys() == right.keys(), a.name
    for key in left:
        assert left[key].keys() == right[key].keys()
        for name, tensor in left[key].items():
            assert torch.equal(tensor, right[key][name]), f'{a.name} {key}.{name} differs'


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_auto_resume_equals_the_uninterrupted_run(tmp_path):
    # Three images, batch 1: the checkpoint at iteration 4 lies inside the second epoch, so the resumed run must
    # continue that epoch after the batch it had drawn (BasicSR 1.4.2 alone restarts the epoch).
    data = make_pairs(tmp_path / 'data', count=3)
    opt = dckd_train_options(tmp_path, data, name='killed', total_iter=6, datasets__train__batch_size_per_gpu=1)
    opt['logger'].update(save_checkpoint_freq=2, print_freq=1)
    opt['train']['step'] = [1]  # the history model moves every iteration
    files = {}
    for label in ('full', 'killed'):
        run_opt = dict(opt, path=dict(opt['path'], experiments_root=str(tmp_path / label)))
        files[label] = write_options(tmp_path / f'{label}.yml', run_opt)
    marker = tmp_path / 'hanging'
    full = subprocess.Popen([PYTHON, '-m', 'dckd_basicsr.train', '-opt', files['full']], cwd=str(tmp_path),
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = subprocess.Popen([PYTHON, '-c', HANG_DRIVER, '-opt', files['killed']], cwd=str(tmp_path),
                              env=_env(KILL_AT='5', MARKER=str(marker)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    _wait_for(marker, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / 'killed' / 'killed'
    assert sorted(p.name for p in (run_dir / 'training_states').iterdir()) == ['2.state', '4.state']
    assert not (run_dir / 'models' / 'net_g_latest.pth').exists()

    resumed = subprocess.run([PYTHON, '-m', 'dckd_basicsr.train', '-opt', files['killed'], '--auto_resume'],
                             cwd=str(tmp_path), env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert full.wait(timeout=300) == 0, full.stderr.read()[-3000:]
    assert 'Resuming training from epoch: 1, iter: 4.' in resumed.stdout + resumed.stderr

    full_dir = tmp_path / 'full' / 'killed'
    for name in ('net_g_6.pth', 'net_his_6.pth', 'net_g_latest.pth', 'net_his_latest.pth'):
        _assert_same_files(full_dir / 'models' / name, run_dir / 'models' / name)
    state_full = torch.load(full_dir / 'training_states/6.state', weights_only=True)
    state_resumed = torch.load(run_dir / 'training_states/6.state', weights_only=True)
    assert state_full['schedulers'] == state_resumed['schedulers']
    optim_full, optim_resumed = state_full['optimizers'][0], state_resumed['optimizers'][0]
    assert optim_full['param_groups'] == optim_resumed['param_groups']
    for index, slots in optim_full['state'].items():
        for key, value in slots.items():
            assert torch.equal(value, optim_resumed['state'][index][key]), (index, key)
    assert int(next(iter(optim_full['state'].values()))['step']) == 6
    assert torch.equal(state_full['rng'][0]['step']['torch'], state_resumed['rng'][0]['step']['torch'])
    # and the run did move the weights after the checkpoint it resumed from
    moved = torch.load(run_dir / 'models/net_his_4.pth', weights_only=True)['params']['conv_first.weight']
    final = torch.load(run_dir / 'models/net_his_6.pth', weights_only=True)['params']['conv_first.weight']
    assert not torch.equal(moved, final)


# `python -m dckd_basicsr.train` on a disk that fills up at iteration FULL_AT: every write of that iteration's
# checkpoint fails with ENOSPC (BasicSR's retries included, without their one-second pauses).
FULL_DISK_DRIVER = '''
import errno, os, sys
from dckd_basicsr.training import checkpoint_files
from dckd_basicsr.train import main

atomic_save = checkpoint_files.atomic_save
full_at = os.environ['FULL_AT']


def full_disk(obj, path, *args):
    if os.path.basename(path).split('.')[0].split('_')[-1] == full_at:
        raise OSError(errno.ENOSPC, 'No space left on device')
    atomic_save(obj, path, *args)


checkpoint_files.atomic_save = full_disk
checkpoint_files.time.sleep = lambda seconds: None
sys.argv = ['dckd_basicsr.train'] + sys.argv[1:]
main()
'''


@pytest.mark.slow
def test_a_full_disk_stops_the_run_then_auto_resume_equals_the_uninterrupted_run(tmp_path):
    data = make_pairs(tmp_path / 'data', count=3)
    opt = dckd_train_options(tmp_path, data, name='disk', total_iter=6, datasets__train__batch_size_per_gpu=1)
    opt['logger'].update(save_checkpoint_freq=2)
    opt['train']['step'] = [1]
    files = {}
    for label in ('full', 'stopped'):
        run_opt = dict(opt, path=dict(opt['path'], experiments_root=str(tmp_path / label)))
        files[label] = write_options(tmp_path / f'{label}.yml', run_opt)
    full = subprocess.Popen([PYTHON, '-m', 'dckd_basicsr.train', '-opt', files['full']], cwd=str(tmp_path),
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stopped = run([PYTHON, '-c', FULL_DISK_DRIVER, '-opt', files['stopped']], cwd=tmp_path, env={'FULL_AT': '4'},
                  check=False)
    run_dir = tmp_path / 'stopped' / 'disk'
    assert stopped.returncode == 2
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"dckd-train: error: could not write the network file {run_dir / 'models' / 'net_g_4.pth'} after 3 tries: "
        '[Errno 28] No space left on device. The run stops (logger.on_save_failure: stop). The last complete '
        f"checkpoint is {run_dir / 'training_states' / '2.state'} (iteration 2): free space and rerun the same command "
        'with --auto_resume to continue from it. To train on without the checkpoints that cannot be written, set '
        'logger.on_save_failure: continue.')
    assert 'Logging error' not in stopped.stderr
    # every file left is complete and loadable; the failed iteration left nothing, not even a temporary
    left = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.glob('*/*') if p.suffix in ('.pth', '.state')
                  or '.tmp' in p.name)
    assert left == ['models/net_g_2.pth', 'models/net_his_2.pth', 'training_states/2.state']
    for name in left:
        torch.load(run_dir / name, weights_only=True)

    resumed = run([PYTHON, '-m', 'dckd_basicsr.train', '-opt', files['stopped'], '--auto_resume'], cwd=tmp_path)
    assert 'Resuming training from epoch: 0, iter: 2.' in resumed.stdout + resumed.stderr
    assert full.wait(timeout=300) == 0, full.stderr.read()[-3000:]
    for name in ('net_g_6.pth', 'net_his_6.pth', 'net_g_latest.pth'):
        _assert_same_files(tmp_path / 'full' / 'disk' / 'models' / name, run_dir / 'models' / name)


# ---------------------------------------------------------------------------------------------------------------------
# 2. A kill during a save
# ---------------------------------------------------------------------------------------------------------------------


class SlowPickle:
    """Pickles only after a long pause, announcing the pause with a marker file: a save that is killed mid-write."""

    def __init__(self, marker: str):
        self.marker = marker

    def cpu(self):
        return self

    def __reduce__(self):
        open(self.marker, 'w').close()
        time.sleep(120)
        return (str, ('never written',))


class FakeModel:
    """Just what ``BaseModel.save_network`` / ``save_training_state`` use."""

    def __init__(self, root: Path, payload):
        self.opt = {'path': {'models': str(root / 'models'), 'training_states': str(root / 'training_states')}}
        self.payload = payload
        self.optimizers = [self]
        self.schedulers = []

    def get_bare_model(self, net):
        return net

    def state_dict(self):
        return {'weight': self.payload}


def _save_checkpoints(root: str, iteration: int, slow: bool, which: str) -> None:
    """Child process: save iteration ``iteration`` through BasicSR's (patched) save functions."""
    payload = SlowPickle(os.path.join(root, 'marker')) if slow else torch.full((4, ), 1.0 * iteration)
    model = FakeModel(Path(root), payload)
    if which in ('network', 'both'):
        BaseModel.save_network(model, model, 'net_g', iteration)
    if which in ('state', 'both'):
        BaseModel.save_training_state(model, 0, iteration)


@pytest.mark.parametrize('which', ['network', 'state'])
def test_a_kill_during_a_save_leaves_the_previous_checkpoint_for_resume(tmp_path, which):
    (tmp_path / 'models').mkdir()
    (tmp_path / 'training_states').mkdir()
    _save_checkpoints(str(tmp_path), 2, slow=False, which='both')
    context = multiprocessing.get_context('fork')
    child = context.Process(target=_save_checkpoints, args=(str(tmp_path), 4, True, which))
    child.start()
    deadline = time.time() + 60
    while not (tmp_path / 'marker').exists() and time.time() < deadline and child.is_alive():
        time.sleep(0.02)
    assert (tmp_path / 'marker').exists()
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    folder = tmp_path / ('models' if which == 'network' else 'training_states')
    final = 'net_g_4.pth' if which == 'network' else '4.state'
    names = sorted(p.name for p in folder.iterdir())
    assert final not in names  # BasicSR's save would have left a truncated file under this name
    assert [name for name in names if name.startswith(f'{final}.tmp')]  # the killed write's temporary is there
    assert latest_training_state(str(tmp_path / 'training_states')) == str(tmp_path / 'training_states/2.state')
    state = torch.load(tmp_path / 'training_states/2.state', weights_only=True)
    assert state['iter'] == 2 and torch.equal(state['optimizers'][0]['weight'], torch.full((4, ), 2.0))
    assert torch.equal(torch.load(tmp_path / 'models/net_g_2.pth', weights_only=True)['params']['weight'],
                       torch.full((4, ), 2.0))


def test_auto_resume_skips_temporaries_and_foreign_names(tmp_path):
    for name in ('3.state', '12.state', '40.state.tmp123', '50.state.tmp', 'x.state', '60.pth'):
        (tmp_path / name).write_bytes(b'')
    assert latest_training_state(str(tmp_path)) == str(tmp_path / '12.state')
    assert latest_training_state(str(tmp_path / 'none')) is None


def _failing_saves(monkeypatch, failures: dict) -> None:
    """``atomic_save`` fails ``failures['left']`` more times with ENOSPC, then writes; no sleeps between retries."""
    from dckd_basicsr.training import checkpoint_files
    atomic_save = checkpoint_files.atomic_save

    def flaky(obj, path):
        if failures['left']:
            failures['left'] -= 1
            raise OSError(errno.ENOSPC, 'No space left on device')
        atomic_save(obj, path)

    monkeypatch.setattr(checkpoint_files, 'atomic_save', flaky)
    monkeypatch.setattr(checkpoint_files.time, 'sleep', lambda seconds: None)


def test_a_failed_save_is_retried_then_stops_the_run_naming_the_file_and_the_last_checkpoint(tmp_path, monkeypatch):
    """BaseModel's saves go through checkpoint_files.save_atomically: an OSError is retried (up to 3 tries, as BasicSR
    does); after the last one the run stops with one message (logger.on_save_failure: stop, the default)."""
    (tmp_path / 'models').mkdir()
    (tmp_path / 'training_states').mkdir()
    failures = {'left': 2}
    _failing_saves(monkeypatch, failures)
    model = FakeModel(tmp_path, torch.ones(2))
    with basicsr_messages() as records:
        BaseModel.save_training_state(model, 0, 3)
        assert failures['left'] == 0 and (tmp_path / 'training_states' / '3.state').is_file()
        assert len(records) == 2 and 'No space left on device; 2 retries left' in records[0]
        failures['left'] = 3
        with pytest.raises(CheckpointWriteError) as stopped:
            BaseModel.save_network(model, model, 'net_g', 5)
    assert failures['left'] == 0 and len(records) == 5 and '0 retries left' in records[-1]
    assert sorted(p.name for p in (tmp_path / 'models').iterdir()) == []  # no temporary left behind either
    assert str(stopped.value) == (
        f"could not write the network file {tmp_path / 'models' / 'net_g_5.pth'} after 3 tries: [Errno 28] No space "
        'left on device. The run stops (logger.on_save_failure: stop). The last complete checkpoint is '
        f"{tmp_path / 'training_states' / '3.state'} (iteration 3): free space and rerun the same command with "
        '--auto_resume to continue from it. To train on without the checkpoints that cannot be written, set '
        'logger.on_save_failure: continue.')


def test_on_save_failure_continue_leaves_the_whole_checkpoint_out(tmp_path, monkeypatch):
    """logger.on_save_failure: continue is BasicSR's behaviour (log and train on); the training state of a checkpoint
    whose network could not be written is left out too, so --auto_resume never picks a checkpoint without its
    networks."""
    (tmp_path / 'models').mkdir()
    (tmp_path / 'training_states').mkdir()
    failures = {'left': 3}
    _failing_saves(monkeypatch, failures)
    model = FakeModel(tmp_path, torch.ones(2))
    model.opt['logger'] = {'on_save_failure': 'continue'}
    with basicsr_messages() as records:
        BaseModel.save_network(model, model, 'net_g', 4)
        BaseModel.save_training_state(model, 0, 4)
        BaseModel.save_network(model, model, 'net_g', 6)  # the disk has space again
        BaseModel.save_training_state(model, 0, 6)
    assert records[3] == (f"Could not save {tmp_path / 'models' / 'net_g_4.pth'}; training continues without it "
                          '(logger.on_save_failure: continue).')
    assert records[4].startswith(f"Training state {tmp_path / 'training_states' / '4.state'} left out")
    assert len(records) == 5
    assert sorted(p.name for p in (tmp_path / 'models').iterdir()) == ['net_g_6.pth']
    assert latest_training_state(str(tmp_path / 'training_states')) == str(tmp_path / 'training_states' / '6.state')
    model.opt['logger'] = {'on_save_failure': 'ignore'}
    with pytest.raises(OptionError, match=r"^logger.on_save_failure: 'ignore'; use stop \(default\) or continue.$"):
        BaseModel.save_network(model, model, 'net_g', 8)


# ---------------------------------------------------------------------------------------------------------------------
# 4. Non-finite losses
# ---------------------------------------------------------------------------------------------------------------------


def _in_process_options(tmp_path: Path, data: dict, **train_updates) -> dict:
    opt = in_process(dckd_train_options(tmp_path, data), tmp_path)
    opt['train'].update(train_updates)
    return opt


def _batch(seed: int) -> dict:
    return batch(seed, size=16)


def _snapshot(model) -> dict:
    nets = {'g': model.net_g, 'ema': model.net_g_ema, 'his': model.net_his}
    return {label: {k: v.clone() for k, v in net.state_dict().items()} for label, net in nets.items()}


def test_nonfinite_loss_skips_the_step_and_stops_after_the_limit(tmp_path, toy_data):
    model = build_model(_in_process_options(tmp_path, toy_data, step=[1], max_nonfinite_steps=3))
    model.feed_data(_batch(0))
    model.optimize_parameters(1)
    before = _snapshot(model)
    adam_steps = int(next(iter(model.optimizer_g.state.values()))['step'])

    original = model.compute_losses

    def poisoned(current_iter):
        losses = original(current_iter)
        losses['l_dcl'] = losses['l_dcl'] * float('nan')
        return losses

    model.compute_losses = poisoned
    with basicsr_messages() as records:
        for current_iter in (2, 3):
            model.feed_data(_batch(current_iter))
            model.optimize_parameters(current_iter)
    after = _snapshot(model)
    for label in before:  # neither the optimizer, nor the EMA, nor the history model moved
        assert all(torch.equal(before[label][k], after[label][k]) for k in before[label]), label
    assert int(next(iter(model.optimizer_g.state.values()))['step']) == adam_steps
    assert len(records) == 2 and records[1].startswith('iter 3: non-finite loss (l_dcl = nan); skipped the optimizer')
    assert '(2 in a row, the run stops at 3)' in records[1]

    model.compute_losses = original  # one good step resets the count
    model.feed_data(_batch(4))
    model.optimize_parameters(4)
    assert model.nonfinite.in_a_row == 0
    assert not torch.equal(after['his']['conv_first.weight'], model.net_his.state_dict()['conv_first.weight'])

    model.compute_losses = poisoned
    for current_iter in (5, 6):
        model.feed_data(_batch(current_iter))
        model.optimize_parameters(current_iter)
    with pytest.raises(FloatingPointError, match=r'iter 7: 3 consecutive steps had a non-finite loss \(last: '
                                                 r'l_dcl = nan\).*train.max_nonfinite_steps \(3\)'):
        model.optimize_parameters(7)


def test_overflowing_teacher_is_skipped_forever_with_limit_zero(tmp_path, toy_data):
    # A teacher checkpoint with NaN/Inf is refused at build time; this one overflows only during training.
    model = build_model(_in_process_options(tmp_path, toy_data, max_nonfinite_steps=0))
    with torch.no_grad():
        model.net_t.conv_last.bias[0] = float('inf')
    before = _snapshot(model)
    for current_iter in range(1, 13):
        model.feed_data(_batch(current_iter))
        model.optimize_parameters(current_iter)
    assert model.nonfinite.in_a_row == 12
    assert model.log_dict['l_kd'] == float('inf') and model.log_dict['l_pix'] < 1
    after = _snapshot(model)
    for label in before:
        assert all(torch.equal(before[label][k], after[label][k]) for k in before[label]), label


@pytest.mark.parametrize('value', [-1, 2.5, 'ten', True])
def test_max_nonfinite_steps_must_be_a_count(value):
    with pytest.raises(OptionError, match='train.max_nonfinite_steps'):
        check_options({'train': {'max_nonfinite_steps': value}})


# ---------------------------------------------------------------------------------------------------------------------
# 5. Bad input (the cases tests/test_dckd_model.py and tests/test_entry_points.py do not already cover)
# ---------------------------------------------------------------------------------------------------------------------


def test_gt_size_not_divisible_by_the_scale(toy_data):
    opt = sr_train_options(toy_data, datasets__train__gt_size=33)
    with pytest.raises(OptionError, match=r'^datasets.train.gt_size: 33 is not divisible by scale \(2\)'):
        check_options(opt)


def test_gt_size_not_a_multiple_of_the_encoder_stride(tmp_path, toy_data):
    opt = dckd_train_options(tmp_path, toy_data, datasets__train__gt_size=40)
    with pytest.raises(OptionError, match=r'^datasets.train.gt_size: 40 is not a multiple of 16, which the VQGAN '
                                          r'encoder .* use e.g. 32'):
        check_options(opt)
    opt['train'].pop('cl_opt')
    opt['train'].pop('ce_opt')
    check_options(opt)  # without an encoder loss, 40 is fine


def test_lmdb_folder_without_meta_info(tmp_path, toy_data):
    (tmp_path / 'hr.lmdb').mkdir()
    (tmp_path / 'hr.lmdb' / 'data.mdb').write_bytes(b'')
    opt = sr_train_options(toy_data, datasets__train__dataroot_gt=str(tmp_path / 'hr.lmdb'),
                           datasets__train__io_backend={'type': 'lmdb'})
    with pytest.raises(OptionError, match=r'datasets.train.dataroot_gt: .*hr.lmdb has no meta_info.txt'):
        check_options(opt)


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_fewer_lq_than_gt_images(tmp_path, backend):
    data = make_pairs(tmp_path / 'data', count=3)
    os.remove(Path(data['lq']) / '0002.png')
    if backend == 'lmdb':
        from basicsr.utils.lmdb_util import make_lmdb_from_imgs
        for key in ('gt', 'lq'):
            names = sorted(os.listdir(data[key]))
            make_lmdb_from_imgs(data[key], str(tmp_path / f'{key}.lmdb'), names, [n[:-4] for n in names],
                                map_size=1 << 24)
            data[key] = str(tmp_path / f'{key}.lmdb')
    opt = sr_train_options(data, datasets__train__io_backend={'type': backend})
    with pytest.raises(OptionError, match=r'(^|\n  )datasets.train.dataroot_lq: .* has 2 images but datasets.train.'
                                          r'dataroot_gt \(.*\) has 3; PairedImageDataset needs one LQ image per GT'):
        check_options(opt)


def test_teacher_checkpoint_for_another_architecture(tmp_path, toy_data):
    opt = _in_process_options(tmp_path, toy_data)
    edsr = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 1, 'upscale': 2}
    opt['path']['pretrain_network_t'] = save_random_network(edsr, tmp_path / 'edsr.pth', seed=3)
    with pytest.raises(OptionError) as error:
        build_model(opt)
    message = str(error.value)
    assert message.startswith('path.pretrain_network_t: ') and 'edsr.pth' in message
    assert 'missing from the checkpoint' in message and len(message) < 1500


@pytest.mark.slow
def test_short_epochs_still_reach_total_iter(tmp_path):
    """3 images, batch 2: BasicSR 1.4.2 counts 2 iterations per epoch, its loader gives 1, and it stopped at 6 of 10."""
    data = make_pairs(tmp_path / 'data', count=3)
    opt = sr_train_options(data, name='short', total_iter=10)
    run([PYTHON, '-m', 'dckd_basicsr.train', '-opt', write_options(tmp_path / 's.yml', opt)], cwd=tmp_path)
    states = tmp_path / 'experiments' / 'short' / 'training_states'
    assert sorted(p.name for p in states.iterdir()) == ['10.state', '5.state']
    assert torch.load(states / '10.state', weights_only=True)['epoch'] == 9


# ---------------------------------------------------------------------------------------------------------------------
# 6. Distributed runs: the collective timeout, the process group's teardown, torchrun restarts (the runs themselves
#    are in tests/test_robust_ddp.py)
# ---------------------------------------------------------------------------------------------------------------------


def test_dist_params_timeout_s_is_read_before_the_group_exists(tmp_path):
    from dckd_basicsr.integration.run_options import requested_timeout_s
    option_file = write_options(tmp_path / 'a.yml', {'dist_params': {'timeout_s': 30}})
    assert requested_timeout_s(option_file, None) == 30
    assert requested_timeout_s(option_file, ['dist_params:timeout_s=45', 'train:total_iter=9']) == 45
    assert requested_timeout_s(write_options(tmp_path / 'b.yml', {'name': 'x'}), None) == 600
    for value in (0, -5, 2.5, 'ten', True):
        with pytest.raises(OptionError, match=rf'^dist_params.timeout_s: {value!r}; use a whole number of seconds > 0 '
                                              r'\(default 600\), longer than rank 0 takes to validate and write a '
                                              'checkpoint.$'):
            requested_timeout_s(write_options(tmp_path / 'c.yml', {'dist_params': {'timeout_s': value}}), None)


def test_the_pipeline_reports_a_collective_timeout_and_always_destroys_its_process_group():
    import torch.distributed as dist
    from dckd_basicsr.errors import CollectiveTimeoutError
    from dckd_basicsr.integration import distributed
    from helpers import free_port

    def timed_out(root_path):
        raise RuntimeError('[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 7000ms for recv operation '
                           'to complete')

    def other_error(root_path):
        raise RuntimeError('[../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:1234.')

    for pipeline, expected in ((timed_out, CollectiveTimeoutError), (other_error, RuntimeError)):
        with distributed.process_group_timeout(7):
            distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0,
                                           world_size=1)
        with pytest.raises(RuntimeError) as error:
            distributed.with_collective_errors_and_teardown(pipeline)('.')
        assert type(error.value) is expected and not dist.is_initialized()
    assert str(error.value).startswith('[../gloo/transport/tcp/pair.cc:561] Connection closed')
    with distributed.process_group_timeout(7):
        distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0, world_size=1)
    with pytest.raises(CollectiveTimeoutError) as error:
        distributed.with_collective_errors_and_teardown(timed_out)('.')
    assert str(error.value) == (
        'rank 0: a collective waited dist_params.timeout_s (7 s) for another rank and gave up ([../gloo/transport/tcp/'
        'unbound_buffer.cc:78] Timed out waiting 7000ms for recv operation to complete). Another rank stopped '
        "responding or is still busy: when rank 0's validation plus checkpoint write takes longer than that, raise "
        "dist_params.timeout_s; otherwise look at the other ranks' logs. Under torchrun --max-restarts the group "
        'restarts from the last complete checkpoint.')
    assert distributed.with_collective_errors_and_teardown(lambda root_path: 'done')('.') == 'done'


def test_basicsr_slurm_launcher_accepts_dist_params_timeout_s():
    """BasicSR calls _init_dist_slurm(backend, **dist_params), which accepts only port: timeout_s goes to the group."""
    import torch.distributed as dist
    from basicsr.utils import dist_util
    from dckd_basicsr.errors import CollectiveTimeoutError
    from dckd_basicsr.integration import distributed
    from helpers import free_port
    assert dist_util._init_dist_slurm.__wrapped__.__module__ == 'basicsr.utils.dist_util'
    calls = []

    def slurm_init(backend, port=None):  # BasicSR's needs srun's environment and GPUs; the group it would create
        calls.append((backend, port))
        dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0, world_size=1)

    distributed.init_dist_slurm(slurm_init)('nccl', port=29511, timeout_s=77)
    assert calls == [('nccl', 29511)]

    def timed_out(root_path):
        raise RuntimeError('Timed out waiting 77000ms for recv operation to complete')

    with pytest.raises(CollectiveTimeoutError, match=r'dist_params.timeout_s \(77 s\)'):
        distributed.with_collective_errors_and_teardown(timed_out)('.')
    assert not dist.is_initialized()


def test_a_torchrun_restart_resumes_from_the_latest_complete_checkpoint(tmp_path, monkeypatch, capsys):
    from dckd_basicsr.integration.run_options import resume_after_restart
    states = tmp_path / 'training_states'
    opt = {'path': {'training_states': str(states), 'resume_state': None}, 'auto_resume': False}
    monkeypatch.setenv('TORCHELASTIC_RESTART_COUNT', '1')
    resume_after_restart(opt)
    assert opt['path']['resume_state'] is None
    assert capsys.readouterr().out == (f'torchrun restart 1: no complete checkpoint yet in {states}; the run starts '
                                       'again from iteration 0.\n')
    states.mkdir()
    for name in ('2.state', '4.state', '6.state.tmp99'):
        (states / name).write_bytes(b'')
    monkeypatch.setenv('TORCHELASTIC_RESTART_COUNT', '0')  # a first start (or no torchrun): nothing changes
    resume_after_restart(opt)
    assert opt['path']['resume_state'] is None and capsys.readouterr().out == ''
    monkeypatch.setenv('TORCHELASTIC_RESTART_COUNT', '2')
    resume_after_restart(opt)
    assert opt['path']['resume_state'] == str(states / '4.state') and not opt['auto_resume']
    assert capsys.readouterr().out == (f"torchrun restart 2: resuming from {states / '4.state'} (iteration 4), the "
                                       "run's latest complete checkpoint, as with --auto_resume.\n")

