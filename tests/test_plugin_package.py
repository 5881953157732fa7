"""Installation, the import hook, registration and the BasicSR patches, tested as a user meets them."""
import ast
import json
import sysconfig
import zipfile

import pytest

from helpers import PYTHON, REPO, run

import dckd_basicsr  # noqa: F401  (registers the plugin; the tests below check what that did)
from dckd_basicsr.errors import OptionError, UnknownTypeError
from dckd_basicsr.integration import patches
from dckd_basicsr.integration.registry_lookup import registered_plugin_names
from dckd_basicsr.training import resume

REGISTRIES = {'archs': ('ARCH_REGISTRY', '_arch.py'), 'losses': ('LOSS_REGISTRY', '_loss.py'),
              'models': ('MODEL_REGISTRY', '_model.py')}


def declared_plugin_names():
    """(registry, name) for every class or function decorated with ``@<X>_REGISTRY.register()`` in the plugin."""
    found = []
    for folder, (registry, suffix) in REGISTRIES.items():
        for path in sorted((REPO / 'dckd_basicsr' / folder).glob(f'*{suffix}')):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                    for deco in node.decorator_list:
                        target = deco.func if isinstance(deco, ast.Call) else deco
                        if isinstance(target, ast.Attribute) and target.attr == 'register':
                            found.append((getattr(target.value, 'id', ''), node.name))
    return found


def test_every_plugin_name_is_registered_in_basicsr():
    from basicsr.utils import registry
    declared = declared_plugin_names()
    assert {'DCKDModel', 'VQGANEncoder', 'VQGAN'} <= {name for _, name in declared}
    for registry_name, name in declared:
        assert name in getattr(registry, registry_name), f'{name} is not in {registry_name}'
        assert name in registered_plugin_names(getattr(registry, registry_name))


HOOK_PROBE = '''
import json, sys
report = {"torch_at_start": "torch" in sys.modules, "basicsr_at_start": "basicsr" in sys.modules,
          "hook": [type(f).__name__ for f in sys.meta_path if type(f).__name__ == "BasicSRFinder"]}
import basicsr
from basicsr.utils import registry
import dckd_basicsr
report["plugin_file"] = dckd_basicsr.__file__
report["models"] = sorted(registry.MODEL_REGISTRY.keys())
report["archs"] = sorted(registry.ARCH_REGISTRY.keys())
report["losses"] = sorted(registry.LOSS_REGISTRY.keys())
report["resume_patched"] = basicsr.train.load_resume_state.__module__
print(json.dumps(report))
'''


def _probe(args, cwd, env=None):
    proc = run(args + ['-c', HOOK_PROBE], cwd=cwd, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_registered(report):
    for registry_name, name in declared_plugin_names():
        key = {'ARCH_REGISTRY': 'archs', 'LOSS_REGISTRY': 'losses', 'MODEL_REGISTRY': 'models'}[registry_name]
        assert name in report[key]
    assert report['resume_patched'] == 'dckd_basicsr.training.resume'


@pytest.mark.slow
def test_import_hook_registers_on_plain_import_basicsr_without_importing_torch_at_startup(tmp_path):
    report = _probe([PYTHON], cwd=tmp_path)
    assert report['hook'] == ['BasicSRFinder']
    assert report['torch_at_start'] is False and report['basicsr_at_start'] is False
    _assert_registered(report)


@pytest.mark.slow
def test_hook_can_be_switched_off(tmp_path):
    code = ('import sys\ntry:\n    import basicsr\nexcept ImportError as error:\n    print(error)\n'
            'print("dckd_basicsr" in sys.modules)')
    proc = run([PYTHON, '-c', code], cwd=tmp_path, env={'DCKD_BASICSR_NO_HOOK': '1'})
    assert proc.stdout.strip().splitlines()[-1] == 'False'
    # and PyPI basicsr 1.4.2 alone cannot even be imported on current torchvision: what the plugin's alias fixes
    assert 'functional_tensor' in proc.stdout


@pytest.mark.slow
def test_regular_non_editable_install_ships_and_runs_the_hook(tmp_path):
    """`pip install .` (a wheel): the .pth and the hook module land at the top of site-packages and work there."""
    wheel_dir = tmp_path / 'wheel'
    run([PYTHON, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(wheel_dir), str(REPO)],
        cwd=tmp_path, timeout=600)
    wheel = next(wheel_dir.glob('dckd_basicsr-*.whl'))
    names = zipfile.ZipFile(wheel).namelist()
    assert 'dckd_basicsr_hook.pth' in names and 'dckd_basicsr_hook.py' in names
    assert {'dckd_basicsr/integration/patches.py', 'dckd_basicsr/training/resume.py',
            'dckd_basicsr/integration/entry_points.py'} <= set(names)

    target = tmp_path / 'site'
    run([PYTHON, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(target), str(wheel)], cwd=tmp_path)
    # -S: no site processing, so neither the editable install nor its hook is seen; then only the venv's
    # dependencies plus the new target dir (processed as a site dir, so its .pth runs) are importable.
    venv_site = sysconfig.get_paths()['purelib']
    probe = (f'import sys, site; sys.path.append({venv_site!r}); site.addsitedir({str(target)!r});\n'
             + HOOK_PROBE)
    proc = run([PYTHON, '-S', '-c', probe], cwd=tmp_path)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report['plugin_file'].startswith(str(target))
    assert report['hook'] == ['BasicSRFinder']
    _assert_registered(report)


def test_torchvision_functional_tensor_alias():
    import sys

    import torchvision.transforms.functional as functional
    from basicsr.data import degradations
    assert sys.modules['torchvision.transforms.functional_tensor'].rgb_to_grayscale is functional.rgb_to_grayscale
    assert degradations.rgb_to_grayscale is functional.rgb_to_grayscale


def test_registry_error_lists_registered_names_and_close_matches():
    from basicsr.utils.registry import LOSS_REGISTRY
    with pytest.raises(KeyError) as info:
        LOSS_REGISTRY.get('L1los')
    assert isinstance(info.value, UnknownTypeError) and isinstance(info.value, OptionError)
    message = str(info.value)
    assert message.startswith("no loss named 'L1los' is registered.")
    assert 'Did you mean: L1Loss' in message and 'MSELoss' in message


def test_registry_error_where_no_option_check_runs():
    """dckd-convert builds its target from --arch (or an option file it reads itself) without parse_options, so only
    the patched Registry.get turns a typo into an OptionError that it prints without a traceback."""
    from dckd_basicsr.commands.convert import build_target
    with pytest.raises(UnknownTypeError, match="no arch named 'RCANN' is registered.\nDid you mean: RCAN"):
        build_target({'type': 'RCANN'})


def _resume_opt(tmp_path):
    models = tmp_path / 'models'
    models.mkdir()
    for name in ('net_g_20.pth', 'net_d_20.pth', 'net_t_20.pth'):
        (models / name).write_bytes(b'')
    return {
        'network_g': {'type': 'A'}, 'network_d': {'type': 'B'}, 'network_t': {'type': 'C'},
        'network_vqgan': {'type': 'VQGAN'}, 'network_his': True, 'network_x': {'type': 'D'},
        'path': {'resume_state': 'training_states/20.state', 'models': str(models),
                 'pretrain_network_g': 'g.pth', 'param_key_g': 'params_ema',
                 'pretrain_network_d': 'd.pth', 'pretrain_network_t': 'teacher.pth', 'param_key_t': 'params_ema',
                 'pretrain_network_vqgan': 'vqgan.ckpt', 'param_key_vqgan': 'state_dict',
                 'pretrain_network_x': 'x.pth', 'ignore_resume_networks': ['network_d']},
    }


def test_check_resume_rewrites_only_saved_trained_networks(tmp_path):
    opt = _resume_opt(tmp_path)
    patches.patch_check_resume()  # idempotent; the installed function is what basicsr.train uses
    import basicsr.train
    basicsr.train.check_resume(opt, 20)
    path = opt['path']
    assert path['pretrain_network_g'] == str(tmp_path / 'models' / 'net_g_20.pth')
    assert path['param_key_g'] == 'params'
    assert path['pretrain_network_d'] == 'd.pth'  # listed in ignore_resume_networks
    assert path['pretrain_network_t'] == 'teacher.pth' and path['param_key_t'] == 'params_ema'  # frozen teacher
    assert path['pretrain_network_vqgan'] == 'vqgan.ckpt' and path['param_key_vqgan'] == 'state_dict'
    assert path['pretrain_network_x'] == 'x.pth'  # nothing saved for it at iteration 20


def test_check_resume_refuses_a_state_without_its_generator(tmp_path):
    opt = _resume_opt(tmp_path)
    (tmp_path / 'models' / 'net_g_20.pth').unlink()
    import basicsr.train
    with pytest.raises(OptionError, match='net_g_20.pth, which is missing'):
        basicsr.train.check_resume(opt, 20)


def test_latest_training_state_ignores_partial_files(tmp_path):
    assert resume.latest_training_state(str(tmp_path / 'none')) is None
    for name in ('5.state', '100.state', '20.state', '200.state.tmp', 'notes.txt'):
        (tmp_path / name).write_text('')
    assert resume.latest_training_state(str(tmp_path)) == str(tmp_path / '100.state')


def test_init_dist_on_cpu_uses_gloo(monkeypatch):
    import torch
    from basicsr.utils import dist_util
    calls = {}
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda *a: calls.setdefault('set_device', a))
    monkeypatch.setattr(torch.distributed, 'init_process_group', lambda backend, **kw: calls.update(backend=backend))
    monkeypatch.setenv('RANK', '1')
    dist_util._init_dist_pytorch('nccl')
    assert calls == {'backend': 'gloo'}


def test_ddp_wrapping_on_cpu_passes_no_device_ids(monkeypatch):
    import torch
    from basicsr.models import base_model
    seen = {}

    class FakeDDP(torch.nn.Module):
        def __init__(self, net, device_ids, find_unused_parameters):
            super().__init__()
            seen.update(device_ids=device_ids, find_unused_parameters=find_unused_parameters)

    import torch.nn.parallel as parallel
    monkeypatch.setattr(parallel, 'DistributedDataParallel', FakeDDP)
    patches.patch_model_to_device()  # re-bind with the fake DDP class
    try:
        model = base_model.BaseModel({'num_gpu': 0, 'is_train': True, 'dist': True})
        model.model_to_device(torch.nn.Linear(2, 2))
    finally:
        monkeypatch.undo()
        patches.patch_model_to_device()
    assert seen == {'device_ids': None, 'find_unused_parameters': False}


def test_installed_distribution_declares_entry_points_and_extras():
    """What pip recorded for the installed package: every console script resolves, and the extras bring the tools."""
    from importlib import metadata
    scripts = {ep.name: ep for ep in metadata.entry_points(group='console_scripts') if ep.name.startswith('dckd-')}
    assert set(scripts) == {'dckd-train', 'dckd-test', 'dckd-demo', 'dckd-convert', 'dckd-infer', 'dckd-export',
                            'dckd-profile', 'dckd-results'}
    for ep in scripts.values():
        assert callable(ep.load()), ep.name
    requires = metadata.requires('dckd-basicsr')
    assert 'basicsr==1.4.2' in requires
    assert any(r.startswith('spandrel') for r in requires)
    for extra, needed in (('export', {'onnx', 'onnxruntime'}), ('test', {'pytest', 'onnx', 'onnxruntime'})):
        names = {r.split(';')[0].split('>')[0].split('=')[0].strip() for r in requires if f'extra == "{extra}"' in r}
        assert needed <= names, (extra, names)
    assert (REPO / 'dckd_basicsr_hook.pth').read_text().strip() == \
        'import dckd_basicsr_hook; dckd_basicsr_hook.install()'


def test_ci_runs_the_readme_test_command():
    readme = (REPO / 'README.md').read_text()
    ci = (REPO / '.ci' / 'run').read_text()
    marker = '<!-- test-command -->'
    assert marker in readme, 'README must mark its test command'
    command = readme.split(marker)[1].split('```bash\n')[1].split('\n```')[0].strip()
    assert command in ci
