"""DCKD under ``torchrun --nproc_per_node 2 ... --launcher pytorch`` on CPU (gloo): both ranks end with identical
student, EMA and history weights; only the student is wrapped in DDP; validation and checkpoint writes happen on rank
0 only; ``--auto_resume`` continues the run on both ranks. Two torchrun agents as two nodes train to the same weights
as one agent with two processes; under ``--max-restarts`` a worker killed with SIGKILL, or stopped with SIGSTOP until
the others' collective times out (``dist_params.timeout_s``), makes torchrun restart the group, which resumes from the
latest complete checkpoint and ends bit for bit as the uninterrupted run."""
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from helpers import BIN, dckd_train_options, free_port, run, write_options

pytestmark = pytest.mark.slow  # every test here trains in fresh interpreters, over 5 s each

# Runs BasicSR's train_pipeline with a DCKDModel that records, per rank, its final weights, which networks are DDP,
# how many validations ran and how many checkpoint files it wrote.
TORCHRUN_DCKD = '''
import os, torch
import dckd_basicsr  # noqa: F401
import basicsr.train
from basicsr.utils.registry import MODEL_REGISTRY
from dckd_basicsr.models.dckd_model import DCKDModel

writes = []
torch_save = torch.save


def counting_save(obj, target, *args, **kwargs):
    name = getattr(target, 'name', target)  # a file object or a path; all_gather_object's BytesIO has neither
    if isinstance(name, (str, os.PathLike)):
        writes.append(str(name))
    return torch_save(obj, target, *args, **kwargs)


torch.save = counting_save


@MODEL_REGISTRY.register()
class RankDumpDCKDModel(DCKDModel):

    validations = 0

    def nondist_validation(self, *args, **kwargs):
        RankDumpDCKDModel.validations += 1
        return super().nondist_validation(*args, **kwargs)

    def save(self, epoch, current_iter):
        super().save(epoch, current_iter)
        if current_iter == -1:
            nets = {name: getattr(self, name) for name in ('net_g', 'net_g_ema', 'net_his', 'net_t', 'net_vqgan')}
            torch_save({'params': self.get_bare_model(self.net_g).state_dict(),
                        'params_ema': self.net_g_ema.state_dict(), 'his': self.net_his.state_dict(),
                        'wrapped': sorted(name for name, net in nets.items() if hasattr(net, 'module')),
                        'validations': RankDumpDCKDModel.validations, 'writes': writes},
                       os.path.join(self.opt['path']['models'], f'rank{self.opt["rank"]}_{os.environ["RUN"]}.pth'))


basicsr.train.train_pipeline(os.getcwd())
'''


def _same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f'{what}.{name} differs between ranks'


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason='this torch build has no gloo backend')
def test_torchrun_dckd_two_cpu_ranks_then_auto_resume(tmp_path, toy_data):
    script = tmp_path / 'train_dump.py'
    script.write_text(TORCHRUN_DCKD)
    opt = dict(dckd_train_options(tmp_path, toy_data, name='ddp', total_iter=4), model_type='RankDumpDCKDModel')
    opt['logger'].update(save_checkpoint_freq=2)
    opt['train']['step'] = [1]
    first_opt = write_options(tmp_path / 'a.yml', opt)
    opt['train']['total_iter'] = 6
    then = write_options(tmp_path / 'b.yml', opt)

    def torchrun(*args, name):
        # a fresh pair of processes each time: re-initialising the default process group in the same processes
        # reuses its store keys, and a rank could then read the other's address from the first group
        command = [str(BIN / 'torchrun'), '--nproc_per_node', '2', '--master_port', free_port(), str(script),
                   '--launcher', 'pytorch', *args]
        return run(command, cwd=tmp_path, timeout=300, env={'RUN': name})

    torchrun('-opt', first_opt, name='first')
    # then `--auto_resume` with a longer option file
    proc = torchrun('--auto_resume', '-opt', then, name='resumed')
    run_dir = tmp_path / 'experiments' / 'ddp'
    models = run_dir / 'models'
    first = [torch.load(models / f'rank{r}_first.pth', weights_only=True) for r in (0, 1)]
    assert first[0]['wrapped'] == first[1]['wrapped'] == ['net_g']  # teacher, EMA, history, encoder: not DDP
    # the one at val_freq (the dump is written before BasicSR's end-of-training validation)
    assert (first[0]['validations'], first[1]['validations']) == (1, 0)
    # rank 0 wrote net_g, net_his and the state at iterations 2 and 4, then net_g/net_his latest; rank 1 nothing
    assert len(first[0]['writes']) == 8 and first[1]['writes'] == []

    assert 'Resuming training from epoch: 3, iter: 4.' in proc.stdout + proc.stderr
    ranks = [torch.load(models / f'rank{r}_resumed.pth', weights_only=True) for r in (0, 1)]
    for key in ('params', 'params_ema', 'his'):
        _same(ranks[0][key], ranks[1][key], key)
    assert ranks[1]['writes'] == [] and ranks[1]['validations'] == 0
    state = torch.load(run_dir / 'training_states' / '6.state', weights_only=True)
    assert state['iter'] == 6 and int(next(iter(state['optimizers'][0]['state'].values()))['step']) == 6
    rng = state['rng']
    assert len(rng) == 2 and not torch.equal(rng[0]['step']['torch'], rng[1]['step']['torch'])  # one per rank
    # the resumed part trained: student and history moved after the checkpoint at 4, on both ranks alike
    for key, saved in (('params', 'net_g_4.pth'), ('his', 'net_his_4.pth')):
        at_4 = torch.load(models / saved, weights_only=True)['params']['conv_first.weight']
        assert not torch.equal(at_4, ranks[0][key]['conv_first.weight']), key


# ---------------------------------------------------------------------------------------------------------------------
# Multi-node, a killed worker, a stopped rank
# ---------------------------------------------------------------------------------------------------------------------

# `dckd-train` with a DCKDModel whose rank 1, the first time it passes iteration FAULT_AT in this run (the marker file
# does not exist yet), sends itself FAULT (SIGKILL or SIGSTOP); every rank writes its final weights. Every worker
# records its pid, so that the test can end any it left behind.
FAULTY_DCKD = '''
import os, signal, sys, torch
import dckd_basicsr  # noqa: F401
from basicsr.utils.registry import MODEL_REGISTRY
from dckd_basicsr.models.dckd_model import DCKDModel
from dckd_basicsr.train import main

open(os.path.join(os.environ['PIDS'], str(os.getpid())), 'w').close()


@MODEL_REGISTRY.register()
class FaultyDCKDModel(DCKDModel):

    def optimize_parameters(self, current_iter):
        super().optimize_parameters(current_iter)
        marker = os.environ.get('FAULT_MARKER')
        if marker and current_iter == 5 and self.opt['rank'] == 1 and not os.path.exists(marker):
            with open(marker, 'w') as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), getattr(signal, os.environ['FAULT']))

    def save(self, epoch, current_iter):
        super().save(epoch, current_iter)
        if current_iter == -1:
            torch.save({'params': self.get_bare_model(self.net_g).state_dict(),
                        'params_ema': self.net_g_ema.state_dict(), 'his': self.net_his.state_dict()},
                       os.path.join(self.opt['path']['models'], f'rank{self.opt["rank"]}.pth'))


sys.argv = ['dckd-train'] + sys.argv[1:]
main()
'''


class Agents:
    """torchrun agents started together on ``script``, each writing to its own log; :meth:`close` ends, by pid, every
    agent and every worker (pids recorded by :data:`FAULTY_DCKD`) still running."""

    def __init__(self, root: Path, script: Path, launches: List[List[str]], script_args: List[str],
                 env: Dict[str, str]):
        self.pids = root / 'pids'
        self.pids.mkdir(exist_ok=True)
        self.script = str(script)
        self.logs = [root / f'agent{index}.log' for index in range(len(launches))]
        full_env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', PIDS=str(self.pids), **env)
        self.procs = []
        for launch, log in zip(launches, self.logs):
            with open(log, 'w') as out:
                self.procs.append(subprocess.Popen([str(BIN / 'torchrun'), *launch, self.script, *script_args,
                                                    '--launcher', 'pytorch'], cwd=str(root), env=full_env,
                                                   stdout=out, stderr=subprocess.STDOUT))

    def output(self) -> str:
        return '\n'.join(log.read_text(errors='replace') for log in self.logs)

    def wait(self, timeout: float) -> List[int]:
        deadline = time.time() + timeout
        for proc in self.procs:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        return [proc.returncode for proc in self.procs]

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.time() + timeout
        while text not in self.output():
            if time.time() > deadline or all(proc.poll() is not None for proc in self.procs):
                raise AssertionError(f'{text!r} never appeared:\n{self.output()[-4000:]}')
            time.sleep(0.1)

    def end_worker(self, pid: int) -> None:
        """SIGKILL worker ``pid`` if it is still one of ours (a pid may be reused once its process is gone)."""
        try:
            if self.script in Path(f'/proc/{pid}/cmdline').read_bytes().decode(errors='replace'):
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for name in os.listdir(self.pids):
            self.end_worker(int(name))


def _train(root: Path, runs: dict, name: str, launches: List[List[str]], env: Dict[str, str], timeout: float = 240,
           during=None) -> Agents:
    """Train ``runs``' DCKD run in ``root / name`` with one torchrun agent per launch; ``during(agents)`` runs while
    they do. Every process is ended before this returns."""
    folder = root / name
    folder.mkdir()
    options = write_options(folder / 'options.yml', runs['opt'])
    agents = Agents(folder, runs['script'], launches, ['-opt', options], env)
    try:
        if during is not None:
            during(agents)
        codes = agents.wait(timeout)
    finally:
        agents.close()
    assert codes == [0] * len(launches), agents.output()[-6000:]
    return agents


def _final_weights(root: Path) -> list:
    models = root / 'experiments' / 'elastic' / 'models'
    return [torch.load(models / f'rank{rank}.pth', weights_only=True) for rank in (0, 1)]


def _assert_uninterrupted(weights: list, reference: dict) -> None:
    for rank, dumped in enumerate(weights):
        for key in ('params', 'params_ema', 'his'):
            assert dumped[key].keys() == reference[key].keys()
            for name in dumped[key]:
                assert torch.equal(dumped[key][name], reference[key][name]), f'rank {rank}: {key}.{name} differs'


@pytest.fixture(scope='module')
def elastic_runs(tmp_path_factory):
    """A tiny DCKD run (6 iterations, checkpoints at 2 and 4) and its final weights on rank 0, trained uninterrupted
    by one torchrun agent with two processes (both ranks end identical)."""
    root = tmp_path_factory.mktemp('elastic')
    from helpers import make_pairs
    opt = dict(dckd_train_options(root, make_pairs(root / 'data'), name='elastic', total_iter=6),
               model_type='FaultyDCKDModel')
    opt['logger'].update(save_checkpoint_freq=2)
    opt['train']['step'] = [1]
    script = root / 'faulty_dckd.py'
    script.write_text(FAULTY_DCKD)
    runs = {'root': root, 'opt': opt, 'script': script}
    _train(root, runs, 'reference', [['--nproc_per_node', '2', '--master_port', free_port()]], {})
    weights = _final_weights(root / 'reference')
    _assert_uninterrupted(weights[1:], weights[0])
    runs['reference'] = weights[0]
    return runs


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason='this torch build has no gloo backend')
def test_two_nodes_lose_a_worker_and_resume_to_the_weights_of_one_uninterrupted_node(elastic_runs):
    """Two torchrun agents (--nnodes 2, c10d rendezvous on 127.0.0.1) as two nodes; rank 1 is SIGKILLed after the
    checkpoint at iteration 4. Its agent restarts (TORCHELASTIC_RESTART_COUNT 1), the other may restart its worker as
    a membership change (count 0): together they resume from iteration 4, without --auto_resume, and end with the
    weights of one agent with two uninterrupted processes, on both ranks."""
    root = elastic_runs['root']
    port = free_port()
    node = ['--nnodes', '2', '--nproc_per_node', '1', '--rdzv-backend', 'c10d', '--rdzv-endpoint',
            f'127.0.0.1:{port}', '--rdzv-id', 'two-nodes', '--max-restarts', '1']
    # a fresh rendezvous store per round: torch's shared one keeps the previous group's keys (docs/clusters.md)
    agents = _train(root, elastic_runs, 'two_nodes', [node, node], {
        'FAULT': 'SIGKILL', 'FAULT_MARKER': str(root / 'killed'), 'TORCH_DISABLE_SHARE_RDZV_TCP_STORE': '1'})
    assert (root / 'killed').exists()
    output = agents.output()
    state = root / 'two_nodes' / 'experiments' / 'elastic' / 'training_states' / '4.state'
    assert output.count(f"torchrun restart 1: resuming from {state} (iteration 4), the run's latest complete "
                        'checkpoint, as with --auto_resume.') == 2  # one line per rank
    assert 'Resuming training from epoch: 3, iter: 4.' in output
    assert os.listdir(root / 'two_nodes' / 'experiments') == ['elastic']  # nothing archived
    _assert_uninterrupted(_final_weights(root / 'two_nodes'), elastic_runs['reference'])


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason='this torch build has no gloo backend')
def test_a_stopped_rank_times_out_then_the_restarted_group_resumes(elastic_runs):
    """Rank 1 stops itself (SIGSTOP) after the checkpoint at iteration 4: rank 0's collective gives up after
    dist_params.timeout_s with one message naming it, torchrun restarts the group (the stopped worker is ended here,
    by its pid, as torchrun would after its 30-second grace period), and the group resumes to the uninterrupted
    weights."""
    root = elastic_runs['root']
    runs = dict(elastic_runs, opt=dict(elastic_runs['opt'], dist_params={'timeout_s': 8}))
    marker = root / 'stopped_worker'

    waited = {}

    def end_the_stopped_worker(agents: Agents) -> None:
        agents.wait_for('dist_params.timeout_s (8 s)', timeout=180)
        waited['s'] = time.time() - marker.stat().st_mtime  # from the stop to the timeout message
        agents.end_worker(int(marker.read_text()))

    agents = _train(root, runs, 'stopped', [['--nproc_per_node', '2', '--master_port', free_port(),
                                             '--max-restarts', '1']],
                    {'FAULT': 'SIGSTOP', 'FAULT_MARKER': str(marker)}, during=end_the_stopped_worker)
    output = agents.output()
    assert 'dckd-train: error: rank 0: a collective waited dist_params.timeout_s (8 s) for another rank and gave up (' \
        in output
    assert 8 <= waited['s'] < 40  # the option's timeout ended the wait, not torch's 30 minutes
    state = root / 'stopped' / 'experiments' / 'elastic' / 'training_states' / '4.state'
    assert f'torchrun restart 1: resuming from {state} (iteration 4)' in output
    assert 'Resuming training from epoch: 3, iter: 4.' in output
    assert os.listdir(root / 'stopped' / 'experiments') == ['elastic']
    _assert_uninterrupted(_final_weights(root / 'stopped'), runs['reference'])
