"""The option schema (dckd_basicsr/integration/option_schema.py, schema_*.py): every key of an
option file means something. Misspelt keys, blocks no model reads and wrong value types are refused before anything
is built, all in one message; a third-party type only warns; the shipped JSON Schema is current, accepts every shipped
option file and rejects the same misspellings; the key sets come from the code that reads them."""
import glob
import json
import os
from os import path as osp

import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY

from helpers import BIN, REPO, dckd_train_options, load_option_file, run, sr_train_options, write_options

import dckd_basicsr  # noqa: F401
from dckd_basicsr.errors import OptionError
from dckd_basicsr.integration import schema_blocks, schema_catalogue, schema_docs
from dckd_basicsr.integration.option_checks import check_options, schema_report
from dckd_basicsr.integration.schema_sources import constructor_arguments, keys_read

DCKD_FILE = osp.join(REPO, 'options/train/SwinIR/train_SwinIR_SRx4_DCKD.yml')
ALL_FILES = sorted(glob.glob(osp.join(REPO, 'options', '**', '*.yml'), recursive=True))

# The misspellings a new user made (issue 23, point 1): (where, wrong key, right key).
MISSPELLINGS = [(('train', ), 'logit_opt', 'logits_opt'), (('train', ), 'num_negs', 'num_neg'),
                (('train', ), 'updat_decay', 'update_decay'), (('network_g', ), 'embed_dm', 'embed_dim'),
                (('datasets', 'train'), 'use_flip', 'use_hflip')]


def misspell(opt: dict, where, wrong: str, right: str) -> dict:
    node = opt
    for key in where:
        node = node[key]
    node[wrong] = node.pop(right)
    return opt


@pytest.mark.parametrize('where, wrong, right', MISSPELLINGS, ids=[m[1] for m in MISSPELLINGS])
def test_each_misspelling_is_an_error_naming_the_key_and_the_right_one(where, wrong, right):
    opt = misspell(load_option_file(DCKD_FILE), where, wrong, right)
    errors = schema_report(opt).errors
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{'.'.join(where + (wrong, ))}: ") and right in errors[0]
    if wrong == 'logit_opt':
        assert errors[0] == 'train.logit_opt: no model reads this block; did you mean logits_opt?'


@pytest.mark.slow
def test_all_misspellings_in_one_message_before_anything_is_built(tmp_path, toy_data):
    """Through dckd-train: exit 2, one message with every problem, no run folder."""
    opt = dckd_train_options(tmp_path, toy_data, name='typos')
    opt['train']['logit_opt'] = opt['train'].pop('logits_opt')
    opt['train']['num_negs'] = opt['train'].pop('num_neg')
    opt['network_g']['num_fet'] = opt['network_g'].pop('num_feat')
    opt['datasets']['train']['use_flip'] = opt['datasets']['train'].pop('use_hflip')
    opt['train']['optim_g']['lr'] = '2e-4'  # YAML reads 2e-4 (no dot) as a string
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    proc = run([str(BIN / 'dckd-train'), '-opt', write_options(tmp_path / 'typos.yml', opt)], cwd=cwd, check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    message = proc.stderr.split('dckd-train: error: ', 1)[1]
    assert message.startswith('5 problems in the option file (nothing was built or written):')
    lines = {line.strip().split(':', 1)[0]: line for line in message.splitlines()[1:]}
    assert set(lines) == {'train.logit_opt', 'train.num_negs', 'network_g.num_fet', 'datasets.train.use_flip',
                          'train.optim_g.lr'}
    assert 'did you mean num_feat' in lines['network_g.num_fet'].replace('Did', 'did')
    assert "'2e-4' is a string; expected a number" in lines['train.optim_g.lr'] and '!!float 2e-4' in \
        lines['train.optim_g.lr']
    assert os.listdir(cwd) == []


@pytest.mark.parametrize('path, value, expected', [
    (('network_g', 'embed_dim'), '60', "network_g.embed_dim: '60' is a string; expected a number."),
    (('train', 'num_neg'), 2.5, 'train.num_neg: 2.5 is a number; expected an integer.'),
    (('train', 'ema_decay'), True, 'train.ema_decay: True is a boolean; expected a number.'),
    (('logger', 'save_format'), 'pt', "logger.save_format: 'pt'; expected one of pth, safetensors."),
    (('train', 'fast'), {'amp': 'fp8'}, "train.fast.amp: 'fp8'; expected one of bf16, fp16."),
    (('train', 'cl_opt', 'type'), 'ContrastLoss', "train.cl_opt.type: no loss named 'ContrastLoss' is registered."),
])
def test_wrong_values_name_the_key_the_value_and_the_expected_type(path, value, expected):
    opt = load_option_file(DCKD_FILE)
    node = opt
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    errors = schema_report(opt).errors
    assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_a_block_another_model_reads_names_that_model():
    opt = load_option_file(osp.join(REPO, 'options/train/SwinIR/train_SwinIR_SRx4_Logits.yml'))
    opt['train']['num_neg'] = 4  # a DCKD key in a KDModel file
    assert schema_report(opt).errors == ['train.num_neg: KDModel does not read this key (DCKDModel does); use one of '
                                         'those model_type values or remove it.']
    opt['train']['zoom_in_opt'] = {'type': 'L1Loss'}
    assert 'use model_type: DUKDModel with train.dukd_opt' in schema_report(opt).errors[1]


def test_the_shipped_files_and_the_test_options_have_no_problem_and_nothing_unchecked(tmp_path, toy_data):
    for path in ALL_FILES:
        report = schema_report(dict(load_option_file(path), is_train='/train/' in path or '/demo/' in path))
        assert (report.errors, report.unchecked) == ([], []), path
    for opt in (sr_train_options(toy_data), dckd_train_options(tmp_path, toy_data)):
        assert (schema_report(opt).errors, schema_report(opt).unchecked) == ([], [])


def test_training_only_keys_are_required_for_training_only(toy_data):
    opt = sr_train_options(toy_data)
    del opt['train']['total_iter'], opt['val']['val_freq']
    assert [e.split(':')[0] for e in schema_report(opt).errors] == ['train.total_iter', 'val.val_freq']
    opt['is_train'] = False
    assert schema_report(opt).errors == []


# ---------------------------------------------------------------- third-party types: checked where possible, else warn
class OpenKwargsNet(torch.nn.Module):
    """A third-party arch keeping its **kwargs: its keys cannot be known."""

    def __init__(self, num_feat=8, **kwargs):
        super().__init__()
        self.extra = dict(kwargs)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)


def register_once(registry, obj):
    if obj.__name__ not in registry:
        registry.register(obj)


def test_a_third_party_type_whose_keys_cannot_be_known_only_warns(toy_data, capsys):
    register_once(ARCH_REGISTRY, OpenKwargsNet)
    opt = sr_train_options(toy_data)
    opt['network_t'] = {'type': 'OpenKwargsNet', 'num_feat': 4, 'depth': 3, 'mode': 'fast'}
    opt['model_type'] = 'KDModel'
    opt['path']['pretrain_network_t'] = None
    report = schema_report(opt)
    assert report.errors == [] and [key for key, _ in report.unchecked] == ['network_t.depth', 'network_t.mode']
    assert "OpenKwargsNet's constructor takes **kwargs and uses them" in report.unchecked[0][1]
    opt['network_t']['num_feat'] = 'four'  # a named argument is still checked
    assert schema_report(opt).errors == ["network_t.num_feat: 'four' is a string; expected a number."]
    opt['network_t']['num_feat'] = 4
    with pytest.raises(OptionError, match='path.pretrain_network_t: not set'):
        check_options(opt)
    out = capsys.readouterr().out
    assert out.startswith('Warning: 2 option keys not checked by the option schema') and \
        'network_t.depth, network_t.mode: OpenKwargsNet' in out


def test_a_third_party_model_and_dataset_warn_about_the_keys_their_code_hides(toy_data):
    from basicsr.data.paired_image_dataset import PairedImageDataset
    from basicsr.models.sr_model import SRModel

    class ThirdPartySRModel(SRModel):
        def init_training_settings(self):
            self.alpha = self.opt['train'].get('alpha', 0.5)
            super().init_training_settings()

    class ThirdPartyDataset(PairedImageDataset):
        def __init__(self, opt):
            super().__init__(opt)
            self.crop = opt.get('crop_mode', 'random')

    register_once(MODEL_REGISTRY, ThirdPartySRModel)
    register_once(DATASET_REGISTRY, ThirdPartyDataset)
    opt = sr_train_options(toy_data, model_type='ThirdPartySRModel')
    opt['train'].update(alpha=0.2, beta=3)
    opt['datasets']['train'].update(type='ThirdPartyDataset', crop_mode='center', zoom=2)
    report = schema_report(opt)
    assert report.errors == []  # alpha and crop_mode are read by their code, beta and zoom may be
    assert sorted(key for key, _ in report.unchecked) == ['datasets.train.zoom', 'train.beta']
    opt['train']['alpha'] = 'x'  # a key read with a float default is typed from it
    assert schema_report(opt).errors == ["train.alpha: 'x' is a string; expected a number."]


# ---------------------------------------------------------------- the JSON Schema
@pytest.fixture(scope='module')
def validator():
    jsonschema = pytest.importorskip('jsonschema')
    with open(schema_blocks.SCHEMA_FILE) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_json_schema_is_generated_from_the_schema():
    with open(schema_blocks.SCHEMA_FILE) as f:
        assert f.read() == schema_blocks.schema_text(), ('dckd_basicsr/option_schema.json is out of date: run python '
                                                         '-c "import dckd_basicsr.integration.schema_blocks as s; '
                                                         's.write_schema()"')


def test_the_json_schema_accepts_every_shipped_option_file(validator):
    for path in ALL_FILES:
        errors = [e.message for e in validator.iter_errors(json.loads(json.dumps(load_option_file(path))))]
        assert errors == [], path


@pytest.mark.parametrize('where, wrong, right', MISSPELLINGS, ids=[m[1] for m in MISSPELLINGS])
def test_the_json_schema_rejects_each_misspelling(validator, where, wrong, right):
    opt = misspell(json.loads(json.dumps(load_option_file(DCKD_FILE))), where, wrong, right)
    errors = list(validator.iter_errors(opt))
    assert [(list(e.absolute_path), e.validator) for e in errors] == [(list(where), 'additionalProperties')]
    assert repr(wrong) in errors[0].message


# ---------------------------------------------------------------- the key sets come from the code
def test_constructor_arguments_follow_kwargs_as_far_as_the_code_shows():
    from basicsr.archs.swinir_arch import SwinIR

    class PassesOn(OpenKwargsNet.__bases__[0]):
        def __init__(self, width=4, **kwargs):
            super().__init__(**kwargs)

    class Mixin:
        def __init__(self, **options):
            self.mode = options.pop('mode', 'a')
            super().__init__(**options)

    class Mixed(Mixin, torch.nn.Conv2d):
        pass

    swinir = [a.name for a in constructor_arguments(SwinIR)]  # **kwargs never used: the named ones
    assert 'embed_dim' in swinir and 'kwargs' not in swinir
    assert [a.name for a in constructor_arguments(PassesOn)] == ['width']  # nn.Module takes none
    assert constructor_arguments(OpenKwargsNet) is None
    mixed = [a.name for a in constructor_arguments(Mixed)]
    assert mixed[0] == 'mode' and 'in_channels' in mixed and 'kernel_size' in mixed


def test_dataset_keys_are_what_each_dataset_class_reads():
    keys = set(schema_blocks.DATASET_FAMILY.block('PairedImageDataset').fields)
    assert {'dataroot_gt', 'dataroot_lq', 'filename_tmpl', 'use_hflip', 'use_rot', 'gt_size', 'meta_info_file',
            'io_backend', 'batch_size_per_gpu', 'num_worker_per_gpu', 'dataset_enlarge_ratio'} <= keys
    single = set(schema_blocks.DATASET_FAMILY.block('SingleImageDataset').fields)
    assert 'dataroot_lq' in single and not {'dataroot_gt', 'gt_size', 'use_hflip'} & single
    assert 'num_frame' in schema_blocks.DATASET_FAMILY.block('VideoTestDataset').fields


def test_what_the_code_reads_is_described_in_the_catalogue():
    """Every key BasicSR's pipeline, its SR-family models and the plugin's models read has a catalogue entry (type,
    default, description), so --explain and the option reference say what it means."""
    from basicsr.data.paired_image_dataset import PairedImageDataset
    from basicsr.data.single_image_dataset import SingleImageDataset
    models = [cls for name, cls in MODEL_REGISTRY if name in ('SRModel', 'SwinIRModel', 'SRGANModel', 'ESRGANModel',
                                                              'KDModel', 'DCKDModel', 'DUKDModel')]
    for section, catalogue in schema_catalogue.SECTIONS.items():
        for cls in models:
            undescribed = [key for key, f in schema_blocks.reads_of(cls, section).items()
                           if key not in catalogue and not f.computed and not f.top_level and section != 'path']
            assert undescribed == [], (section, cls.__name__)
    for dataset in (PairedImageDataset, SingleImageDataset):
        assert set(keys_read([dataset], schema_catalogue.DATASET_CONTAINERS)) <= set(schema_catalogue.DATASET)


def test_explain(capsys):
    assert schema_docs.explain('train.num_neg').splitlines() == [
        'train.num_neg (int; default: 4; read by DCKDModel; may also stand at the top level)',
        '  negatives per sample (degraded copies of the LQ input, restored by the history model)']
    assert schema_docs.explain('SwinIR.embed_dim').startswith('SwinIR.embed_dim (number; default: 96)')
    opt = load_option_file(DCKD_FILE)
    assert schema_docs.explain('network_g.embed_dim', opt).startswith('network_g.embed_dim (number; default: 96)')
    assert 'use_hflip' in schema_docs.explain('datasets.train', opt)
    with pytest.raises(OptionError, match="no option 'num_negs'; did you mean num_neg"):
        schema_docs.explain('train.num_negs')
    with pytest.raises(OptionError, match='depend on its type'):
        schema_docs.explain('network_g.embed_dim')
