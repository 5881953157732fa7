"""The CUDA paths a CPU never takes, marked ``cuda`` (``python -m pytest -m cuda tests``, run by
``scripts/gpu_check.sh``): whole-step amp fp16 with the GradScaler and bf16 on the GPU, compiled networks (triton),
a CUDA run resumed on CPU and back, nccl with one process, ``prefetch_mode: cuda``. Without a GPU they skip, saying
why. Where the CPU version of a test is cheap it runs too (``device`` parametrisation), so the test's own logic is
checked on every machine; the GPU check script's CPU behaviour is tested here as well."""
import os
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import torch
from basicsr.models import build_model

import dckd_basicsr  # noqa: F401
from helpers import (BIN, PYTHON, REPO, batch, dckd_options, dckd_train_options, free_port, kd_options, run,
                     tiny_network, write_checkpoints, write_options)

NO_CUDA = 'needs a CUDA device (torch.cuda.is_available() is False)'
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]
DEVICES = ['cpu', pytest.param('cuda', marks=CUDA)]
# Relative difference allowed per loss term against fp32 (tests/test_fast_amp.py's, measured on CPU; the GPU's
# reduced-precision kernels round alike).
AMP_RTOL = {'bf16': {'l_dcl': 0.15, 'other': 2e-3}, 'fp16': {'l_dcl': 0.015, 'other': 5e-4}}


def _on(opt: dict, device: str) -> dict:
    opt['num_gpu'] = 1 if device == 'cuda' else 0
    return opt


def _losses(model, seed: int) -> dict:
    """One step's loss terms (no update) under the model's train.fast precision."""
    model.feed_data(batch(seed))
    with model.model_random_stream(), torch.no_grad(), model.precision.step_autocast():
        model.output = model.net_g(model.lq).float()
        model.run_teacher()
        return {key: value.item() for key, value in model.compute_losses(1).items()}


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_whole_step_amp_trains_on_the_device(tmp_path, device, amp):
    """amp fp16 (with the GradScaler) and bf16: loss terms within the documented drift of fp32, steps that move the
    fp32 student, a GradScaler in use for fp16 only."""
    from dckd_basicsr.training.precision import fp16_supported
    if amp == 'fp16' and not fp16_supported(torch.device(device)):
        pytest.skip(f'torch {torch.__version__} has no fp16 autocast on {device}')
    files = write_checkpoints(tmp_path)
    torch.manual_seed(0)
    exact = build_model(_on(dckd_options(tmp_path, files), device))
    torch.manual_seed(0)
    model = build_model(_on(dckd_options(tmp_path, files, fast=dict(amp=amp)), device))
    assert model.device.type == device and next(model.net_g.parameters()).device.type == device
    reference, fast = _losses(exact, 0), _losses(model, 0)
    assert fast != reference
    for key, value in reference.items():
        assert fast[key] == pytest.approx(value, rel=AMP_RTOL[amp].get(key, AMP_RTOL[amp]['other'])), key
    before = {key: value.clone() for key, value in model.net_g.state_dict().items()}
    for current_iter in (1, 2, 3):
        model.feed_data(batch(current_iter))
        model.optimize_parameters(current_iter)
    assert all(torch.isfinite(torch.tensor(value)) for value in model.log_dict.values())
    assert all(parameter.dtype == torch.float32 for parameter in model.net_g.parameters())
    assert not all(torch.equal(before[key], value) for key, value in model.net_g.state_dict().items())
    assert model.precision.scaler.is_enabled() == (amp == 'fp16')
    if amp == 'fp16':
        assert 0 < model.precision.scaler.get_scale() < float('inf')


@pytest.mark.parametrize('device', [pytest.param('cuda', marks=CUDA)])
def test_compiled_networks_on_the_device(tmp_path, device):
    """train.fast.compile with inductor's GPU code (triton): the compiled KD step matches eager."""
    def kd(root, **fast):
        opt = kd_options(root, tiny_network('msrresnet'), tiny_network('msrresnet_teacher'),
                         logits_opt=dict(type='L1Loss'), fast=fast)
        torch.manual_seed(0)
        return build_model(_on(opt, device))

    exact, model = kd(tmp_path / 'exact'), kd(tmp_path / 'compiled', compile=True, compile_strict=True)
    assert model.net_g._compiled_call_impl is not None
    for current_iter in (1, 2):
        for each in (exact, model):
            each.feed_data(batch(current_iter))
            each.optimize_parameters(current_iter)
    for key, value in exact.log_dict.items():
        assert model.log_dict[key] == pytest.approx(value, rel=1e-3), key


def _train_run(tmp_path: Path, opt: dict, name: str, *flags: str) -> str:
    proc = run([PYTHON, '-m', 'dckd_basicsr.train', '-opt', write_options(tmp_path / f'{name}.yml', opt), *flags],
               cwd=tmp_path)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize('device', [pytest.param('cuda', marks=CUDA)])
def test_a_cuda_run_resumes_on_cpu_and_back(tmp_path, toy_data, device):
    opt = dckd_train_options(tmp_path, toy_data, name='moves', total_iter=2, num_gpu=1)
    opt['logger'].update(save_checkpoint_freq=2)
    _train_run(tmp_path, opt, 'cuda')
    output = _train_run(tmp_path, dict(opt, num_gpu=0, train=dict(opt['train'], total_iter=4)), 'cpu', '--auto_resume')
    assert 'Resuming training from epoch: 0, iter: 2.' in output  # the CUDA checkpoint, on CPU
    output = _train_run(tmp_path, dict(opt, train=dict(opt['train'], total_iter=6)), 'back', '--auto_resume')
    assert 'Resuming training from epoch: 1, iter: 4.' in output  # the CPU checkpoint, on the GPU
    models = tmp_path / 'experiments' / 'moves' / 'models'
    assert {'net_g_2.pth', 'net_g_4.pth', 'net_g_6.pth', 'net_his_6.pth'} <= {p.name for p in models.iterdir()}
    final = torch.load(models / 'net_g_6.pth', weights_only=True)['params']
    assert all(value.device.type == 'cpu' and torch.isfinite(value).all() for value in final.values())


# Prints the backend of the process group BasicSR's init_dist creates, then trains.
BACKEND_DRIVER = '''
import sys
import torch.distributed as dist
import dckd_basicsr  # noqa: F401
from dckd_basicsr.integration import distributed
from dckd_basicsr.train import main

init = distributed.init_process_group


def reporting(backend, **kwargs):
    init(backend, **kwargs)
    print(f'process group backend: {dist.get_backend()}', flush=True)


distributed.init_process_group = reporting
sys.argv = ['dckd-train'] + sys.argv[1:]
main()
'''


@pytest.mark.parametrize('device', [pytest.param('cuda', marks=CUDA)])
def test_torchrun_with_one_process_uses_nccl(tmp_path, toy_data, device):
    """(Its CPU version, gloo with one process, passes too: CUDA_VISIBLE_DEVICES='' and num_gpu: 0.)"""
    opt = dckd_train_options(tmp_path, toy_data, name='one', total_iter=2, num_gpu=1)
    script = tmp_path / 'backend.py'
    script.write_text(BACKEND_DRIVER)
    proc = run([str(BIN / 'torchrun'), '--nproc_per_node', '1', '--master_port', free_port(), str(script), '-opt',
                write_options(tmp_path / 'one.yml', opt), '--launcher', 'pytorch'], cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert 'process group backend: nccl' in output
    assert 'Network: DistributedDataParallel - MSRResNet' in output
    assert (tmp_path / 'experiments' / 'one' / 'models' / 'net_g_latest.pth').is_file()


@pytest.mark.parametrize('device', [pytest.param('cuda', marks=CUDA)])
def test_prefetch_mode_cuda_trains(tmp_path, toy_data, device):
    opt = dckd_train_options(tmp_path, toy_data, name='prefetch', total_iter=3, num_gpu=1,
                             datasets__train__prefetch_mode='cuda', datasets__train__pin_memory=True)
    output = _train_run(tmp_path, opt, 'prefetch')
    assert 'Use cuda prefetch dataloader' in output
    assert (tmp_path / 'experiments' / 'prefetch' / 'models' / 'net_g_latest.pth').is_file()


# ---------------------------------------------------------------------------------------------------------------------
# scripts/gpu_check.sh without a GPU, and its report
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the behaviour without CUDA')
def test_gpu_check_without_cuda_says_so_in_one_line(tmp_path):
    proc = subprocess.run(['bash', str(REPO / 'scripts' / 'gpu_check.sh'), str(tmp_path / 'out')], cwd=str(REPO),
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHON=PYTHON))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('\n') == 1 and proc.stderr == ''
    assert proc.stdout.startswith('gpu_check: no CUDA device (torch.cuda.is_available() is False with torch ')
    assert not (tmp_path / 'out').exists()


def test_gpu_check_report_is_one_markdown_table_of_tests_and_the_benchmark(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location('gpu_check_report', REPO / 'scripts' / 'gpu_check_report.py')
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    suite = ElementTree.Element('testsuite')
    for name, time, outcome in (('test_a[cuda]', '1.5', None), ('test_b', '0.1', 'skipped'),
                                ('test_c', '2', 'failure')):
        case = ElementTree.SubElement(suite, 'testcase', classname='tests.test_cuda', name=name, time=time)
        if outcome:
            ElementTree.SubElement(case, outcome, message=f'{outcome} because of X\nmore')
    ElementTree.ElementTree(suite).write(tmp_path / 'cuda_tests.xml')
    (tmp_path / 'bench_step.md').write_text('### swinir x4\n\n| method | step s |\n|---|---|\n| DCKD exact | 0.1 |\n')
    (tmp_path / 'bench_step_compile.status').write_text('124\n')
    text = report.report(tmp_path, device='NVIDIA H100', torch_version='2.x', minutes=3.5)
    lines = text.splitlines()
    assert lines[0] == '## GPU check: NVIDIA H100, torch 2.x, 3.5 min'
    assert '| tests.test_cuda::test_a[cuda] | passed | 1.5 |' in lines
    assert '| tests.test_cuda::test_b | skipped: skipped because of X | 0.1 |' in lines
    assert '| tests.test_cuda::test_c | FAILED: failure because of X | 2.0 |' in lines
    assert 'CUDA tests: 1 passed, 1 failed, 1 skipped.' in lines
    assert '| DCKD exact | 0.1 |' in lines
    assert any(line.startswith('bench_step.py, compile rows: stopped by the time limit') for line in lines)
