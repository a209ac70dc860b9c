"""Every fenced Python and shell block of README.md and docs/*.md runs, in order, as a reader runs it.

Sybil parses the Markdown (fenced blocks, ``>>>`` doctests, ``<!-- skip: next "reason" -->``);
each block becomes one test, ``test_block[docs/serving.md:56]``. The blocks of one document share
one namespace and one scratch directory, its working directory, where HTML comments before a
block bring what the block assumes:

``<!-- docs-test: setup fraud.onnx rows -->``
    builds the named inputs (see ``doc_setups.py``; each built once per session) into the scratch
    directory and the namespace.
``<!-- docs-test: serves 8000 -->``
    the next Python block is a script that serves on that port until stopped: it runs in an
    interpreter of its own, started like the servers of shell blocks (below).
``<!-- docs-test: output EXPRESSION -->``
    before a text block: the block is what ``EXPRESSION`` prints, or the ``Type: message`` of the
    error it raises. ``<!-- docs-test: output-labels EXPRESSION -->`` compares only the first
    word of each line (reports whose figures are timings).

Shell blocks run line by line with bash (``.venv/bin`` first on PATH). ``aimass serve`` and
``aimass ui`` start in the background and the block goes on once their port answers; such a
server keeps running for the later blocks of the document (a ``curl``, a remote ``Model.load``)
until a block starts another on its port or the document ends. The ports a document names
(8000, 8001, 8080, 9100) are mapped to free ones, and the host ``mass`` to 127.0.0.1, so the
test runs beside other servers. Blocks that need a GPU, S3, a Ray cluster, a peer server or the
network are marked with a skip directive that says so. The counts (run, skipped with reason) are
printed at the end of the session.
"""

from __future__ import annotations

import doctest
import itertools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import doc_setups as setups
import pytest
from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = ("bash", "sh", "shell")
PORTS = (8000, 8001, 8080, 9100)  # every port a document names; each mapped to a free one
SERVER = re.compile(r"^aimass\s+(serve|ui)\b")
SERVER_START_S = 90.0  # a cold `aimass serve` imports its frameworks: seconds on 2 busy cores
COMMAND_S = 240.0
SERVES = "__docs_test_serves__"  # set by a serves directive, read by the next Python block

COUNTS: dict[str, Any] = {"run": 0, "skipped": [], "setups": 0, "outputs": 0}


@dataclass
class DocState:
    """What the blocks of one document share: the scratch directory, the ports, the servers."""

    directory: Path
    ports: dict[int, int]
    servers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # variables setups give the shell blocks


STATES: dict[str, DocState] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _state(example: Example) -> DocState:
    state = STATES.get(example.path)
    if state is None:
        raise RuntimeError(f"{example.path}: blocks run only through test_block")
    return state


def _localize(source: str, state: DocState) -> str:
    """The ports and host a document names, mapped to this run's free ports on loopback."""
    source = re.sub(r"\b(mass|localhost)(?=:\d)", "127.0.0.1", source)
    return re.sub(r"\b(" + "|".join(map(str, PORTS)) + r")\b", lambda m: str(state.ports[int(m.group(1))]), source)


def run_python(example: Example) -> None:
    """Compile and run a block in the document's namespace (line numbers as in the document).

    After ``<!-- docs-test: serves PORT -->`` the block is a script that serves until stopped: it
    runs in its own interpreter, like ``aimass serve``, and the test goes on once PORT answers.
    """
    state = _state(example)
    source = _localize(str(example.parsed), state)
    port = example.namespace.pop(SERVES, None)
    if port is not None:
        script = state.directory / f".block-{example.line}.py"
        script.write_text(source)
        _start_server(f"{shlex.quote(sys.executable)} {script.name}", state, state.ports[port])
        return
    code = compile("\n" * (example.line + example.parsed.line_offset) + source, example.path, "exec", dont_inherit=True)
    exec(code, example.namespace)
    example.namespace.pop("__builtins__", None)


def _commands(source: str) -> list[str]:
    """The block's commands: continuation lines joined, blank and comment-only lines dropped."""
    commands: list[str] = []
    pending = ""
    for line in source.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def _env(state: DocState) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(state.directory)])
    env.update(state.env)
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the group: --workers starts processes of its own
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _start_server(command: str, state: DocState, port: int | None = None) -> None:
    if port is None:  # aimass serve / ui: the port its flag names, or the default it would take
        words = shlex.split(command, comments=True)
        if "--port" not in words:
            command = f"{command.split('#')[0].rstrip()} --port {state.ports[8000 if words[1] == 'serve' else 8080]}"
            words = shlex.split(command, comments=True)
        port = int(words[words.index("--port") + 1])
    if port in state.servers:
        _stop(state.servers.pop(port))
    log = state.directory / f".server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=state.directory,
            env=_env(state),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{command!r} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                state.servers[port] = proc
                return
        time.sleep(0.2)
    _stop(proc)
    raise AssertionError(
        f"{command!r} did not listen on its port in {SERVER_START_S:.0f} s:\n{log.read_text()[-3000:]}"
    )


def run_shell(example: Example) -> None:
    """Run each command with bash; servers start in the background and stay up for later blocks."""
    state = _state(example)
    for command in _commands(_localize(str(example.parsed), state)):
        if SERVER.match(command):
            _start_server(command, state)
            continue
        proc = subprocess.run(
            ["bash", "-c", "set -o pipefail; " + command],
            cwd=state.directory,
            env=_env(state),
            capture_output=True,
            text=True,
            timeout=COMMAND_S,
        )
        assert proc.returncode == 0, (
            f"{command!r} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )


def _next_block(document: Document, position: int) -> str:
    """The text of the first fenced block after ``position``: what an output directive compares."""
    match = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL).search(document.text, position)
    if match is None:
        raise ValueError(f"{document.path}: an output directive with no fenced block after it")
    return match.group(1)


def _printed(expression: str, namespace: dict[str, Any]) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            value = eval(expression, namespace)
            if value is not None:
                print(value)
    except Exception as exc:  # the documented output is the error a user sees
        return f"{type(exc).__name__}: {exc}"
    return buffer.getvalue()


def run_directive(example: Example) -> None:
    kind, _, argument = str(example.parsed[0]).partition(" ")
    if kind == "serves":
        example.namespace[SERVES] = int(argument)
        return
    if kind == "setup":
        state = _state(example)
        setups.build(argument.split(), setups.Context(state.directory, example.namespace, state.env, state.ports))
        return
    expected, shown = example.parsed[1], _printed(argument, example.namespace)
    if kind == "output-labels":  # the rows a report has, in order; a repeated row (one per recipe) counts once
        want = [k for k, _ in itertools.groupby(line.split()[0] for line in expected.splitlines() if line.strip())]
        got = [k for k, _ in itertools.groupby(line.split()[0] for line in shown.splitlines() if line.strip())]
    else:
        want, got = expected.split(), shown.split()  # whitespace and line breaks are layout
    assert got == want, (
        f"documented output differs from what {argument!r} prints:\n{expected}\n--- printed ---\n{shown}"
    )


class DirectiveParser:
    """``<!-- docs-test: setup NAMES -->`` and ``<!-- docs-test: output[-labels] EXPRESSION -->``."""

    def __init__(self) -> None:
        self.lexer = DirectiveInHTMLCommentLexer("docs-test", arguments=".+?")

    def __call__(self, document: Document) -> Iterator[Region]:
        for region in self.lexer(document):
            arguments = str(region.lexemes["arguments"]).strip()
            expected = _next_block(document, region.end) if arguments.startswith("output") else ""
            yield Region(region.start, region.end, (arguments, expected), run_directive)


def _parsers() -> list[Any]:
    python = PythonCodeBlockParser(doctest_optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    python.codeblock_parser = CodeBlockParser("python", run_python)  # ports mapped, as in shell blocks
    return [SkipParser(), DirectiveParser(), python, *(CodeBlockParser(lang, run_shell) for lang in SHELLS)]


SYBIL = Sybil(parsers=_parsers())
PARSED = {path: SYBIL.parse(path) for path in DOCUMENTS}
EXAMPLES = [(path, example) for path, document in PARSED.items() for example in document.examples()]


def _id(item: tuple[Path, Example]) -> str:
    path, example = item
    return f"{path.relative_to(ROOT)}:{example.line}"


@pytest.fixture(scope="session")
def docs_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("docs")
    setups.CACHE = root / ".cache"
    yield root
    for state in STATES.values():
        for proc in state.servers.values():
            _stop(proc)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("item", EXAMPLES, ids=[_id(item) for item in EXAMPLES])
def test_block(item: tuple[Path, Example], docs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, example = item
    name = str(path.relative_to(ROOT)).replace("/", "-")
    if str(path) not in STATES:
        for previous in STATES.values():  # one document's servers at a time: 2 cores
            for proc in previous.servers.values():
                _stop(proc)
            previous.servers.clear()
        (docs_root / name / "work").mkdir(parents=True)
        STATES[str(path)] = DocState(docs_root / name / "work", {port: _free_port() for port in PORTS})
    state = STATES[str(path)]
    monkeypatch.chdir(state.directory)
    # Libraries, caches and credentials of the reader's machine stay out of the documents' runs.
    for key in [k for k in os.environ if k.startswith("AIMASS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AIMASS_STORE", str(state.directory / ".store"))
    monkeypatch.setenv("AIMASS_CACHE", str(state.directory / ".cache"))
    monkeypatch.setenv("TMPDIR", str(state.directory.parent / "tmp"))
    monkeypatch.syspath_prepend(str(state.directory))
    (state.directory.parent / "tmp").mkdir(exist_ok=True)
    try:
        example.evaluate()
    except unittest_skip() as exc:
        COUNTS["skipped"].append(f"{_id(item)}: {exc}")
        pytest.skip(str(exc))
    if example.region.evaluator is not run_directive:
        COUNTS["run"] += 1
    else:
        COUNTS["outputs" if str(example.parsed[0]).startswith("output") else "setups"] += 1


def unittest_skip() -> type[BaseException]:
    import unittest

    return unittest.SkipTest
