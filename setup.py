"""Install dckd-basicsr: ``pip install .`` or ``pip install -e .`` (add ``[test]`` for pytest)."""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HOOK_PTH = 'dckd_basicsr_hook.pth'


class BuildWithHook(build_py):
    """Also place ``dckd_basicsr_hook.pth`` at the top of the build, so it lands in site-packages.

    The one-line .pth file imports ``dckd_basicsr_hook``, which registers the plugin when ``basicsr`` is first
    imported, so BasicSR's unmodified ``python -m basicsr.train`` finds the plugin's models. Editable installs go
    installs get the same file from :class:`EditableWithHook`.
    """

    def run(self):
        super().run()
        self.copy_file(HOOK_PTH, os.path.join(self.build_lib, HOOK_PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, HOOK_PTH)]


class EditableWithHook(editable_wheel):
    """``pip install -e .``: put ``dckd_basicsr_hook.pth`` into the editable wheel too.

    setuptools' editable wheel keeps only its own ``__editable__`` .pth from the build outputs, so the hook file is
    copied into the unpacked wheel next to it (``_run_build_commands`` is the step that fills that folder).
    """

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        self.copy_file(HOOK_PTH, os.path.join(unpacked_wheel, HOOK_PTH), preserve_mode=False)
        return result


def read_version():
    with open(os.path.join('dckd_basicsr', '__init__.py')) as f:
        for line in f:
            if line.startswith('__version__'):
                return line.split('=')[1].strip().strip('\'"')
    raise RuntimeError('no __version__ in dckd_basicsr/__init__.py')


setup(
    name='dckd-basicsr',
    version=read_version(),
    description='Dynamic Contrastive Knowledge Distillation (AAAI 2025) for image restoration, as a BasicSR plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    # datasets_prep is importable so that dckd-demo builds its data with the same code; the demo's option templates
    # ship inside the package for non-editable installs (the source tree's options/demo is used when present).
    packages=find_packages(include=['dckd_basicsr', 'dckd_basicsr.*', 'datasets_prep']) + ['dckd_basicsr.demo_options'],
    package_dir={'dckd_basicsr.demo_options': 'options/demo'},
    py_modules=['dckd_basicsr_hook'],
    include_package_data=True,
    # the JSON Schema of option files (dckd_basicsr/option_schema.json, dckd-train --json-schema writes it anew)
    package_data={'dckd_basicsr.demo_options': ['*.yml'], 'dckd_basicsr': ['option_schema.json']},
    install_requires=[
        'torch>=2.1',
        'torchvision>=0.16',
        'basicsr==1.4.2',
        'numpy',
        'opencv-python',
        'lmdb',
        'pyyaml',
        'scikit-image',
        'tqdm',
        # teachers of any published architecture (SpandrelTeacher), official-checkpoint shape inference, and the
        # spandrel-loadable export of the student; brings safetensors, which every checkpoint reader accepts
        'spandrel>=0.4',
        'safetensors',
        # dckd-demo's comparison.png (the crops and the validation-PSNR curves), drawn with the Agg backend
        'matplotlib',
    ],
    extras_require={
        # dckd-export --to onnx and its onnxruntime verification
        'export': ['onnx', 'onnxruntime', 'onnxscript'],
        # jsonschema: the shipped JSON Schema of option files is checked against every shipped option file
        'test': ['pytest>=7', 'onnx', 'onnxruntime', 'onnxscript', 'jsonschema'],
    },
    entry_points={
        'console_scripts': [
            'dckd-train=dckd_basicsr.train:main',
            'dckd-test=dckd_basicsr.test:main',
            'dckd-demo=dckd_basicsr.commands.demo:main',
            'dckd-convert=dckd_basicsr.commands.convert:cli',
            'dckd-infer=dckd_basicsr.commands.infer:cli',
            'dckd-export=dckd_basicsr.commands.export:cli',
            'dckd-profile=dckd_basicsr.commands.profile:cli',
            'dckd-results=dckd_basicsr.commands.results:cli',
        ],
    },
    cmdclass={'build_py': BuildWithHook, 'editable_wheel': EditableWithHook},
    zip_safe=False,
)
