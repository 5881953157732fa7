"""DCKD under ``torchrun --nproc_per_node 2 ... --launcher pytorch`` on CPU (gloo): both ranks end with identical
student, EMA and history weights; only the student is wrapped in DDP; validation and checkpoint writes happen on rank
0 only; ``--auto_resume`` continues the run on both ranks."""
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
