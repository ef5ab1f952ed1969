"""The commands the docs show name flags their command has. README.md and docs/*.md are read for
fenced ```bash / ```sh / ```console blocks; in them, every command line (backslash continuations
joined, `$ ` prompts dropped, console output skipped, also after `&&`, `;`, `|` or a wrapper such
as `srun`) that runs `hpe-<name>` (a console script of pyproject.toml), `python -m hpe_jax.<module>`
or `python tools/<name>.py` is checked: each `--flag[=value]` must be one of the command's absl
flags (`--noflag`: a boolean one), a `--config=configs/FILE.py[:arg]` must load, and each
`--config.a.b=value` must name a field of that config. Only names are checked, so placeholders
such as `--workdir=DIR` or `[--step=S]` are fine; a flag value naming a file under configs/ must
exist. Every relative link of these files leads to a file that exists and, with an #anchor, to a
heading of it.

Each command's flags come from a fresh interpreter that imports its module, as the command itself
does: commands define their flags at import into absl's global FLAGS, and several define the same
names (--workdir, --step, --config, ...), which absl refuses to define twice in one process. The
commands import without jax (tests/commands/test_commands.py), so each listing takes a fraction of
a second, a few at a time.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib

import conftest
import ml_collections

REPO = pathlib.Path(conftest.REPO)
DOCS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]

with open(REPO / 'pyproject.toml', 'rb') as f:
  # console script -> the module it runs: 'hpe-train' -> 'hpe_jax.commands.train'
  SCRIPTS = {
    name: entry.partition(':')[0] for name, entry in tomllib.load(f)['project']['scripts'].items()
  }

_SHELL_BLOCKS = {'bash', 'sh', 'shell', 'console'}
_SEPARATORS = {'&&', '||', ';', '|'}

# Lists a command module's flags as JSON: name -> [boolean, is a config file flag].
_LIST_FLAGS = (
  'import importlib, json, sys\n'
  'from absl import app, flags\n'
  'importlib.import_module(sys.argv[1])\n'
  'app.define_help_flags()\n'
  'kinds = lambda f: [f.boolean, type(f.parser).__name__ == "ConfigFileFlagParser"]\n'
  'print(json.dumps({name: kinds(flags.FLAGS[name]) for name in flags.FLAGS}))\n'
)


@dataclasses.dataclass(frozen=True)
class Command:
  where: str  # file:line of the command's first line
  program: str  # as written: 'hpe-train', 'python -m hpe_jax.main', 'python tools/benchmark.py'
  module: str | None  # the module that defines its flags (None: no such command)
  args: tuple[str, ...]  # the words after the program


def shell_lines(text: str) -> list[tuple[int, str]]:
  """(line number, command line) of the fenced shell blocks of Markdown `text`: backslash
  continuations joined, `$ ` prompts dropped, a console block's output lines skipped."""
  lines = []
  fence = language = pending = None
  for number, line in enumerate(text.splitlines(), 1):
    stripped = line.strip()
    if fence is None:
      opening = re.match(r'(```+|~~~+)\s*([\w-]*)', stripped)
      if opening:
        fence, language = opening[1], opening[2].lower()
      continue
    if stripped.startswith(fence) and not stripped.strip(fence[0]):
      fence = pending = None
      continue
    if language not in _SHELL_BLOCKS:
      continue
    start, joined = pending or (number, '')
    joined = f'{joined} {stripped}' if joined else stripped
    if joined.endswith('\\'):
      pending = (start, joined[:-1].rstrip())
      continue
    pending = None
    if language == 'console' and not joined.startswith('$'):
      continue  # output
    lines.append((start, joined.removeprefix('$').strip()))
  return lines


def _program(words: list[str], at: int) -> tuple[str, str | None, int] | None:
  """The program starting at words[at]: (as written, its module or None, how many words)."""
  word = words[at]
  if re.fullmatch(r'hpe-[\w-]+', word):
    return word, SCRIPTS.get(word), 1
  if word in ('python', 'python3') and at + 1 < len(words):
    following = words[at + 1]
    if following == '-m' and at + 2 < len(words) and words[at + 2].split('.')[0] == 'hpe_jax':
      return f'{word} -m {words[at + 2]}', words[at + 2], 3
    tool = re.fullmatch(r'tools/(\w+)\.py', following)
    if tool:
      exists = (REPO / following).is_file()
      return f'{word} {following}', f'tools.{tool[1]}' if exists else None, 2
  return None


def commands(where: str, line: str) -> list[Command]:
  """The hpe_jax commands of one shell line (after separators and wrappers such as srun)."""
  found = []
  # Shell words, `#` comments dropped; `;` and `&&` split even when attached to a word. `|` only
  # as a word of its own: `[--up=camera|floor]` is one word.
  lexer = shlex.shlex(line, posix=True, punctuation_chars=';&')
  lexer.whitespace_split = True
  words = list(lexer)
  segment_start = 0
  for end in [*(i for i, word in enumerate(words) if word in _SEPARATORS), len(words)]:
    segment = words[segment_start:end]
    segment_start = end + 1
    for at in range(len(segment)):
      program = _program(segment, at)
      if program:
        written, module, length = program
        found.append(Command(where, written, module, tuple(segment[at + length :])))
        break
  return found


def documented_commands(docs: list[pathlib.Path] = DOCS) -> list[Command]:
  found = []
  for path in docs:
    name = path.relative_to(REPO)
    for number, line in shell_lines(path.read_text()):
      found.extend(commands(f'{name}:{number}', line))
  return found


def _list_flags(module: str) -> dict | str:
  """{flag: (boolean, config file flag)} of the command `module`, or why it did not import."""
  listed = subprocess.run(
    [sys.executable, '-c', _LIST_FLAGS, module],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=REPO,
  )
  if listed.returncode:
    return listed.stderr.strip().splitlines()[-1] if listed.stderr.strip() else 'failed'
  return {name: tuple(kinds) for name, kinds in json.loads(listed.stdout).items()}


_FLAGS: dict[str, dict | str] = {}


def flags_of(modules: set[str]) -> dict[str, dict | str]:
  """Each module's flags (cached), the missing ones listed a few at a time."""
  missing = sorted(modules - set(_FLAGS))
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    _FLAGS.update(zip(missing, pool.map(_list_flags, missing)))
  return {module: _FLAGS[module] for module in modules}


@functools.cache
def _load_config(path: str, arg: str | None) -> ml_collections.ConfigDict | str:
  """The config of `--config=path[:arg]`, or why it does not load."""
  from hpe_jax import default_config  # pylint: disable=g-import-not-at-top  (imports jax)

  try:
    return default_config.load_config(str(REPO / path), arg)
  except Exception as e:  # pylint: disable=broad-except  (the problem to report)
    return f'{type(e).__name__}: {e}'


def _flag(word: str) -> tuple[str, str | None] | None:
  """('name', value or None) of a `--name[=value]` word; a placeholder's brackets dropped."""
  word = word.lstrip('[')
  if not word.startswith('--') or word == '--':
    return None
  name, has_value, value = word[2:].partition('=')
  if value.count(']') > value.count('['):
    value = value[: value.rindex(']')]
  return name.rstrip(']'), value if has_value else None


def _is_placeholder(path: str) -> bool:
  return not re.search(r'[a-z]', path)  # CONFIG, FILE, ...


def problems_of(command: Command, flags: dict | str | None) -> list[str]:
  """What `command` gets wrong, one line each (none: it is right)."""
  said = f'{command.where}: {command.program}'
  if command.module is None:
    return [f'{said}: no such command']
  if isinstance(flags, str):
    return [f'{said}: {command.module} does not import: {flags}']
  problems = []
  named = []
  for word in command.args:
    if word == '--':
      break
    parsed = _flag(word)
    if parsed:
      named.append(parsed)
  config = None
  for name, value in named:
    if name == 'config' and value and flags.get('config', (False, False))[1]:
      path, _, arg = value.partition(':')
      if _is_placeholder(path):
        continue
      if not path.startswith('configs/') or not (REPO / path).is_file():
        problems.append(f'{said}: --config={value}: no such file in configs/')
        continue
      config = _load_config(path, arg or None)
      if isinstance(config, str):
        problems.append(f'{said}: --config={value} does not load: {config}')
  for name, value in named:
    if value and value.startswith('configs/') and not (REPO / value.partition(':')[0]).is_file():
      if name != 'config':  # reported above
        problems.append(f'{said}: --{name}={value}: no such file')
    if name in flags:
      continue
    if name.startswith('no') and flags.get(name[2:], (False,))[0] and value is None:
      continue  # --noflag of a boolean flag
    if name.startswith('config.') and flags.get('config', (False, False))[1]:
      field = name.removeprefix('config.')
      if config is None:
        problems.append(f'{said}: --{name}: an override without --config=configs/FILE.py')
      elif isinstance(config, ml_collections.ConfigDict):
        node = config
        for key in field.split('.'):
          if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            problems.append(f'{said}: --{name}: the config has no field {field!r}')
            break
          node = node[key]
      continue
    problems.append(f'{said}: no flag --{name}')
  return problems


def check(found: list[Command]) -> list[str]:
  flags = flags_of({command.module for command in found if command.module})
  return [
    problem for command in found for problem in problems_of(command, flags.get(command.module))
  ]


def test_the_docs_show_the_commands():
  """The extraction finds the commands (a broken parser would find none and pass the check)."""
  found = documented_commands()
  modules = {command.module for command in found}
  assert len(found) >= 40, found
  assert {
    f'hpe_jax.commands.{name}'
    for name in ('train', 'evaluate', 'predict', 'analyze', 'export', 'study', 'build_dataset')
  } <= modules, modules
  assert {'hpe_jax.main', 'tools.benchmark'} <= modules, modules
  assert any('--config.data.train_2d=mpii,lsp_extended' in command.args for command in found)


def test_every_documented_flag_exists():
  problems = check(documented_commands())
  assert not problems, '\n'.join(problems)


EXAMPLE = """
```console
$ pip install -e . && hpe-train --config=configs/finetune.py:paper,stage=2 \\
    --config.train.lr=1e-4 [--workdir=DIR]  # a comment --not_a_flag
an output line --not_a_flag
$ srun --nodes=2 hpe-evaluate --workdir=runs/x --noflip_test [--dataset=human36m:test]
```

```python
hpe-train --not_shell
```

```bash
python -m hpe_jax.main --config=configs/pretrain.py; hpe-study --study=configs/study_small.py
```
"""

BAD = """
```bash
hpe-predict --workdir=runs/finetune --no_such_flag photo.jpg
hpe-train --config=configs/finetune.py --config.train.no_such_field=1
hpe-train --config=configs/no_such_config.py
hpe-train --config=configs/finetune.py:no_such_arg
hpe-evaluate --noworkdir=1
hpe-study --study=configs/no_such_study.py
hpe-no-such-command --help
python tools/no_such_tool.py
python -m hpe_jax.no_such_module
```
"""


def _from(text: str) -> list[Command]:
  """The commands of Markdown `text`, each where its line number."""
  return [command for number, line in shell_lines(text) for command in commands(str(number), line)]


def test_commands_are_found_after_prompts_separators_and_wrappers():
  found = _from(EXAMPLE)
  assert [(c.where, c.program, c.args) for c in found] == [
    (
      '3',
      'hpe-train',
      ('--config=configs/finetune.py:paper,stage=2', '--config.train.lr=1e-4', '[--workdir=DIR]'),
    ),
    ('6', 'hpe-evaluate', ('--workdir=runs/x', '--noflip_test', '[--dataset=human36m:test]')),
    ('14', 'python -m hpe_jax.main', ('--config=configs/pretrain.py',)),
    ('14', 'hpe-study', ('--study=configs/study_small.py',)),
  ]
  assert not check(found)


def test_a_flag_that_does_not_exist_fails():
  problems = check(_from(BAD))
  assert len(problems) == 9, '\n'.join(problems)
  for number, expected in enumerate(
    [
      'no flag --no_such_flag',
      "no field 'train.no_such_field'",
      '--config=configs/no_such_config.py: no such file',
      'unknown config arg',
      'no flag --noworkdir',
      '--study=configs/no_such_study.py: no such file',
      'hpe-no-such-command: no such command',
      'python tools/no_such_tool.py: no such command',
      'hpe_jax.no_such_module does not import',
    ]
  ):
    assert expected in problems[number], (expected, problems[number])


def _outside_code(text: str) -> list[str]:
  """The lines of Markdown `text` outside fenced code blocks."""
  kept, fence = [], None
  for line in text.splitlines():
    opening = re.match(r'\s*(```+|~~~+)', line)
    if fence is None and opening:
      fence = opening[1]
    elif fence is not None and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
      fence = None
    elif fence is None:
      kept.append(line)
  return kept


def _anchors(path: pathlib.Path) -> set[str]:
  """GitHub's anchors of a Markdown file's headings: 'The paper's study' -> the-papers-study."""
  lines = _outside_code(path.read_text())
  headings = [line.lstrip('#').strip() for line in lines if line.startswith('#')]
  return {re.sub(r'[^\w\- ]', '', heading.lower()).replace(' ', '-') for heading in headings}


def test_every_link_between_the_docs_leads_somewhere():
  broken = []
  for doc in DOCS:
    for line in _outside_code(doc.read_text()):
      for target in re.findall(r'\]\(([^)\s]+)\)', line):
        if re.match(r'[a-z]+:', target):
          continue  # https:, mailto:
        file, _, anchor = target.partition('#')
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
          broken.append(f'{doc.relative_to(REPO)}: ({target}): no such file')
        elif anchor and path.suffix == '.md' and anchor not in _anchors(path):
          broken.append(f'{doc.relative_to(REPO)}: ({target}): no such heading')
  assert not broken, '\n'.join(broken)
