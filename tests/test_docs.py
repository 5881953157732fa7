"""Every example in README.md and docs/*.md is checked, so the documentation cannot drift from the code.

Pages are found by glob: a page another change adds under docs/ is covered with no change here. What is checked, by
the fenced block's language:

- ``bash`` / ``sh`` / ``shell``: every command (``&&``, ``;`` and pipes split it; ``# comments`` and ``\\``
  continuations as the shell reads them) is parsed. Its program must be this project's (``dckd-*``, ``python -m
  dckd_basicsr.train``, ``python -m basicsr.train``, ``python <script>.py``, under ``torchrun`` or ``srun`` too) or a
  known tool (pip, python -m venv/pytest, code, cd, git). The flags of a ``dckd-*`` command (and of the train/test
  pipelines however they are started) must be accepted by that command's own argument parser; the flags of a script
  must appear in the script. Every argument that names a file of this repository (``options/``, ``datasets_prep/``,
  ``benchmarks/``, ``scripts/``, ``docs/``, ``tests/``, ``dckd_basicsr/``) must exist.
- ``yaml``: parsed; every key path must be an option the option schema knows (a fragment of an option file).
- ``json``: parsed. ``python``: compiled.
- Blocks without a language (console output) are not checked.

Markers, an HTML comment on the line right before a block's opening fence:

- ``<!-- docs-check: run -->``: the commands (``dckd-*`` ones) are also run, in this process, from a temporary folder
  (from the repository when they name a file of it), and must exit with status 0 and print something; for examples
  that are fast on tiny data (``--explain``, ``--json-schema``, ``--help``);
- ``<!-- docs-check: skip REASON -->``: the block is not checked at all (say why).

Longer examples that need data (the smoke runs, ``dckd-infer``, ``dckd-export``) run in their own tests
(``tests/test_smoke.py``, ``tests/test_infer.py``, ``tests/test_export.py``) on tiny data; here they are parsed.
"""
import glob
import json
import re
import shlex
from os import path as osp
from typing import Iterator, List, NamedTuple, Optional

import pytest
import yaml

from helpers import BIN, REPO

PAGES = sorted([osp.join(REPO, 'README.md')] + glob.glob(osp.join(REPO, 'docs', '*.md')))
REPO_DIRS = ('options/', 'datasets_prep/', 'benchmarks/', 'scripts/', 'docs/', 'tests/', 'dckd_basicsr/')
FENCE = re.compile(r'^```(\w*)\s*$')
MARKER = re.compile(r'^<!--\s*docs-check:\s*(run|skip)\b(.*?)-->\s*$')
TOOLS = ('pip', 'pip3', 'code', 'cd', 'git', 'source', '.', 'ls', 'mkdir', 'export')


class Block(NamedTuple):
    page: str
    line: int
    language: str
    marker: Optional[str]
    text: str

    def __str__(self) -> str:
        return f'{osp.relpath(self.page, REPO)}:{self.line}'


def blocks(page: str) -> Iterator[Block]:
    lines = open(page, encoding='utf-8').read().split('\n')
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        marker = MARKER.match(lines[i - 1]) if i else None
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith('```'))
        yield Block(page, i + 1, match.group(1).lower(), marker.group(1) if marker else None,
                    '\n'.join(lines[i + 1:end]))
        i = end + 1


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]


def checked(languages) -> List[Block]:
    return [block for block in ALL_BLOCKS if block.language in languages and block.marker != 'skip']


def commands(text: str) -> List[List[str]]:
    """The commands of a shell block: continuations joined, comments dropped, split at ``&&``, ``;``, pipes."""
    found = []
    for line in text.replace('\\\n', ' ').split('\n'):
        tokens = shlex.split(line, comments=True)
        command: List[str] = []
        for token in tokens + [';']:
            if token in ('&&', ';', '||', '|'):
                if command:
                    found.append(command)
                command = []
            else:
                command.append(token)
    return found


def parser_for(program: str, module: str = ''):
    """The argument parser of one of this project's commands (None: check flags against the source instead)."""
    from dckd_basicsr.commands import convert, export, infer, profile
    from dckd_basicsr.integration.command_line import command_line_parser
    name = module or program
    if name in ('dckd-train', 'dckd_basicsr.train', 'basicsr.train', 'dckd_basicsr/train.py'):
        return command_line_parser(True, 'dckd-train')
    if name in ('dckd-test', 'dckd_basicsr.test', 'basicsr.test', 'dckd_basicsr/test.py'):
        return command_line_parser(False, 'dckd-test')
    return {'dckd-infer': infer.build_parser, 'dckd-export': export.build_parser, 'dckd-profile': profile.build_parser,
            'dckd-convert': convert.build_parser}.get(name, lambda: None)()


SOURCES = {'dckd-results': 'dckd_basicsr/commands/results.py', 'dckd-demo': 'dckd_basicsr/commands/demo/__init__.py',
           'dckd_basicsr.commands.demo': 'dckd_basicsr/commands/demo/__init__.py'}


def check_command(tokens: List[str]) -> None:
    """Raise AssertionError when ``tokens`` is not a command of this project as it really is (see the docstring)."""
    while tokens and re.fullmatch(r'[A-Z_]+=\S*', tokens[0]):
        tokens = tokens[1:]
    program, args = tokens[0], tokens[1:]
    if program in ('torchrun', 'srun'):
        start = next((i for i, t in enumerate(args) if t in ('-m', 'python', 'python3') or t.endswith('.py')), None)
        assert start is not None, f'{program}: no python command in {tokens}'
        return check_command((['python'] if args[start] == '-m' or args[start].endswith('.py') else []) + args[start:])
    module = script = ''
    if program in ('python', 'python3'):
        if args[:1] == ['-m']:
            module, args = args[1], args[2:]
            if module in ('pytest', 'venv', 'pip'):
                return
        else:
            script, args = args[0], args[1:]
            assert osp.isfile(osp.join(REPO, script)), f'{script}: no such script in the repository'
    elif program in TOOLS:
        return
    else:
        assert program.startswith('dckd-') and (BIN / program).exists(), f'{program}: not a command of this project'
    for arg in args:
        for part in ([arg] + arg.split('=', 1)[1:]):
            if part.startswith(REPO_DIRS) and not re.search(r'[*<>{]|\.\.\.', part):
                assert osp.exists(osp.join(REPO, part)), f'{part}: no such file or folder in the repository'
    parser = parser_for(program, module or script)
    if parser is not None:
        try:
            parser.parse_args(args)
        except SystemExit as error:
            raise AssertionError(f'{" ".join(tokens)}: its parser refuses the arguments') from error
        return
    source = SOURCES.get(module or program) or script
    assert source, f'{" ".join(tokens)}: no parser or source to check its flags against'
    text = open(osp.join(REPO, source), encoding='utf-8').read()
    for flag in (arg.split('=', 1)[0] for arg in args if arg.startswith('--')):
        assert f"'{flag}'" in text, f'{flag}: {source} has no such flag'


@pytest.mark.parametrize('block', checked(('bash', 'sh', 'shell')), ids=str)
def test_shell_examples_name_real_commands_flags_and_files(block):
    for tokens in commands(block.text):
        check_command(tokens)


def console_script(program: str):
    """The function behind a console script of setup.py (``dckd-train`` -> ``dckd_basicsr.train:main``)."""
    import importlib
    setup = open(osp.join(REPO, 'setup.py'), encoding='utf-8').read()
    target = re.search(rf"'{re.escape(program)}=([\w.]+):(\w+)'", setup)
    assert target, f'{program}: not a console script of setup.py'
    return getattr(importlib.import_module(target.group(1)), target.group(2))


@pytest.mark.parametrize('block', [b for b in ALL_BLOCKS if b.marker == 'run'], ids=str)
def test_examples_marked_run_run(block, tmp_path, monkeypatch, capsys):
    """Each command of the block, in this process (the console script's function with its argv), from the repository
    when it names a file of it, else from a temporary folder: exit status 0 and some output."""
    import sys
    for tokens in commands(block.text):
        assert tokens[0].startswith('dckd-'), f'{block}: only the dckd-* commands are run here'
        monkeypatch.chdir(REPO if any(t.startswith(REPO_DIRS) for t in tokens) else tmp_path)
        monkeypatch.setattr(sys, 'argv', tokens)
        try:
            console_script(tokens[0])()
        except SystemExit as error:
            assert error.code in (0, None), f'{block}: {" ".join(tokens)} exited with {error.code}'
        out = capsys.readouterr().out
        assert out.strip(), f'{block}: {" ".join(tokens)} printed nothing'
        for written in tokens[1:]:
            if written.endswith('.json') and not written.startswith(REPO_DIRS):  # --json-schema FILE
                assert json.load(open(tmp_path / written))['title']


def check_option_paths(node: dict, fragment: dict, prefix: str = '') -> None:
    """Every key of ``node`` explained by the schema (an OptionError for an unknown one); a mapping the schema
    holds as one value (``ddconfig``) is not entered."""
    from dckd_basicsr.integration.schema_docs import explain
    for key, value in node.items():
        path = f'{prefix}{key}'
        text = explain(path, fragment)
        if isinstance(value, dict) and f'\n{path}: ' in text:  # the schema lists the keys of this block
            check_option_paths(value, fragment, f'{path}.')


@pytest.mark.parametrize('block', checked(('yaml', 'yml')), ids=str)
def test_yaml_examples_use_options_the_schema_knows(block):
    import dckd_basicsr  # noqa: F401
    fragment = yaml.safe_load(block.text)
    assert isinstance(fragment, dict), f'{block}: not a mapping'
    check_option_paths(fragment, fragment)


@pytest.mark.parametrize('block', checked(('json', 'python')), ids=str)
def test_json_and_python_examples_parse(block):
    if block.language == 'json':
        json.loads(block.text)
    else:
        compile(block.text, str(block), 'exec')


def test_every_page_is_found_and_the_readme_links_every_doc():
    readme = open(osp.join(REPO, 'README.md'), encoding='utf-8').read()
    for page in PAGES[1:]:
        assert f'(docs/{osp.basename(page)})' in readme, f'README.md does not link docs/{osp.basename(page)}'
    linked = re.findall(r'\]\((docs/[\w.-]+\.md)\)', readme)
    assert linked and all(osp.isfile(osp.join(REPO, page)) for page in linked)
    assert len(checked(('bash', 'sh', 'shell'))) >= 10 and [b for b in ALL_BLOCKS if b.marker == 'run']


def test_the_option_reference_is_generated_from_the_schema():
    import dckd_basicsr  # noqa: F401
    from dckd_basicsr.integration.schema_docs import REFERENCE_FILE, option_reference
    with open(REFERENCE_FILE, encoding='utf-8') as f:
        assert f.read() == option_reference(), ('docs/options.md is out of date: run python -c "import '
                                                'dckd_basicsr.integration.schema_docs as s; s.write_reference()"')


def test_option_tables_of_the_docs_name_options_the_schema_knows():
    """Rows of a docs table whose first cell is an option key (`train.num_neg`, `path.pretrain_network_t`)."""
    import dckd_basicsr  # noqa: F401
    from dckd_basicsr.integration.schema_docs import explain
    keys = set()
    for page in PAGES:
        for line in open(page, encoding='utf-8'):
            cell = line.split('|')[1].strip() if line.startswith('|') and line.count('|') > 2 else ''
            keys.update(k for k in re.findall(r'`((?:train|path|val|logger|datasets\.\w+|dist_params)\.[\w.]+|'
                                              r'network_\w+)`', cell))
    assert len(keys) > 20
    for key in sorted(keys):
        explain(key.replace('datasets.train.', 'datasets.train.'))


def test_the_readme_states_what_the_code_does():
    """The statements issue 23 found stale: the demo's validations, bench_quality's scale, the smoke example."""
    from dckd_basicsr.commands.demo.templates import VALIDATIONS
    readme = open(osp.join(REPO, 'README.md'), encoding='utf-8').read()
    assert VALIDATIONS == 4 and 'at four evenly spaced iterations and once more when its run ends' in readme
    fast = open(osp.join(REPO, 'docs', 'fast.md'), encoding='utf-8').read()
    assert "the demo's SRResNet student (its networks, at x4; the demo itself runs\nat x2 by default)" in fast
    assert 'datasets:train:filename_tmpl={}x4' in readme
