"""Render Go `text/template` text two ways: a small Python evaluator, and Go itself when it is installed.

Ollama's TEMPLATE is a Go template. LoRA Studio writes one per Ollama export (ollama_template.py) and
proves it renders what the run's Jinja chat template renders. The proof must run everywhere, so this
module evaluates the subset of Go templates the studio writes: text, comments, `{{-`/`-}}` trimming,
string and integer literals, `.Field` / `$.Field` / `$var`, `$var := ...`, `if` / `else if` / `else`,
`range $i, $x := ...`, and the functions `eq ne not and or len slice index`. Anything else raises
`GoTemplateError`, so the evaluator never guesses. Where Go is installed, `go_render` renders the same
template with Go's own `text/template` (`missingkey=zero` and the `json` helper, as Ollama parses it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import Any

ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(-?\d+)|(\$\w*(?:\.\w+)*)|(\.(?:\w+(?:\.\w+)*)?)|(:=|=)|([(),])|(\w+))')
ESCAPES = MappingProxyType(dict(zip('ntr\\"abfv', '\n\t\r\\"\a\b\f\v')))
# Go actions this evaluator does not do (the studio never writes them); one string, split, names them.
UNSUPPORTED = tuple("else end with define template block break continue".split())
GO_PROGRAM = r"""package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type message struct {
	Role    string
	Content string
}

type job struct {
	Template string
	Cases    []struct {
		System   string
		Messages []*message
	}
}

func main() {
	var jobs []job
	if err := json.NewDecoder(os.Stdin).Decode(&jobs); err != nil {
		os.Stderr.WriteString(err.Error())
		os.Exit(2)
	}
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	out := [][]string{}
	for _, in := range jobs {
		tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(in.Template)
		if err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(3)
		}
		rendered := []string{}
		for _, c := range in.Cases {
			var b strings.Builder
			values := map[string]any{"System": c.System, "Messages": c.Messages, "Response": ""}
			if err := tmpl.Execute(&b, values); err != nil {
				os.Stderr.WriteString(err.Error())
				os.Exit(4)
			}
			rendered = append(rendered, b.String())
		}
		out = append(out, rendered)
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
"""


class GoTemplateError(ValueError):
    """The template uses something this evaluator does not know, or Go refused it (a bug of ours)."""


# --- parsing -------------------------------------------------------------------------------------
def _pieces(source: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", body) pieces, with Go's whitespace trimming already applied."""
    pieces, at = [], 0
    for match in ACTION.finditer(source):
        text = source[at:match.start()]
        if match.group(1):
            text = text.rstrip(" \t\r\n")
        if pieces and pieces[-1][0] == "trim-right":
            pieces.pop()
            text = text.lstrip(" \t\r\n")
        if text:
            pieces.append(("text", text))
        body = match.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            pieces.append(("action", body))
        if match.group(3):
            pieces.append(("trim-right", ""))
        at = match.end()
    tail = source[at:]
    if pieces and pieces[-1][0] == "trim-right":
        pieces.pop()
        tail = tail.lstrip(" \t\r\n")
    if tail:
        pieces.append(("text", tail))
    return pieces


def _tokens(body: str) -> list[tuple[str, str]]:
    found, at, body = [], 0, body.strip()
    while at < len(body):
        match = TOKEN.match(body, at)
        if not match or match.end() == at:
            raise GoTemplateError(f"cannot read {body[at:]!r}")
        kind = ("string", "int", "var", "field", "assign", "paren", "ident")[match.lastindex - 1]
        found.append((kind, match.group(match.lastindex)))
        at = match.end()
    return found


def _go_string(literal: str) -> str:
    out, i, inner = [], 0, literal[1:-1]
    while i < len(inner):
        char = inner[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        code = inner[i + 1]
        if code in ESCAPES:
            out.append(ESCAPES[code])
            i += 2
        else:
            width = {"x": 2, "u": 4, "U": 8}.get(code)
            if width is None:
                raise GoTemplateError(f"unknown escape \\{code}")
            out.append(chr(int(inner[i + 2:i + 2 + width], 16)))
            i += 2 + width
    return "".join(out)


def _parse(pieces, at: int, stops: tuple[str, ...]):
    """Nodes up to one of `stops` (a keyword action); returns (nodes, index of the stop, stop body)."""
    nodes = []
    while at < len(pieces):
        kind, body = pieces[at]
        word = body.split(None, 1)[0] if kind == "action" and body else ""
        if kind == "action" and (word in stops or body in stops):
            return nodes, at, body
        if kind == "text":
            nodes.append(("text", body))
            at += 1
        elif word in ("if", "range"):
            node, at = _parse_block(pieces, at, word, body[len(word):].strip())
            nodes.append(node)
        elif word in UNSUPPORTED:
            raise GoTemplateError(f"unexpected {{{{ {body} }}}}")
        else:
            nodes.append(("action", _tokens(body)))
            at += 1
    if stops:
        raise GoTemplateError(f"missing {{{{ end }}}} (wanted one of {stops})")
    return nodes, at, ""


def _parse_block(pieces, at: int, word: str, head: str):
    body, at, stop = _parse(pieces, at + 1, ("else", "end"))
    other = []
    if stop.startswith("else if"):
        node, at = _parse_block(pieces, at, "if", stop[len("else if"):].strip())
        return (word, _tokens(head), body, [node]), at
    if stop == "else":
        other, at, stop = _parse(pieces, at + 1, ("end",))
    return (word, _tokens(head), body, other), at + 1


# --- evaluation ----------------------------------------------------------------------------------
def _truth(value: Any) -> bool:
    return bool(value) if value is not None else False


def _field(value: Any, names: list[str]) -> Any:
    for name in names:
        value = value.get(name) if isinstance(value, dict) else getattr(value, name, None)
    return value


def _shown(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Scope:
    def __init__(self, root: dict):
        self.variables = [{"$": root}]

    def lookup(self, name: str) -> Any:
        for frame in reversed(self.variables):
            if name in frame:
                return frame[name]
        raise GoTemplateError(f"undefined variable {name}")

    def assign(self, name: str, value: Any) -> None:
        for frame in reversed(self.variables):
            if name in frame:
                frame[name] = value
                return
        raise GoTemplateError(f"undefined variable {name}")


FUNCTIONS = MappingProxyType({
    "eq": lambda a, *others: any(a == b for b in others),
    "ne": lambda a, b: a != b,
    "not": lambda a: not _truth(a),
    "len": lambda a: len(a),
    "slice": lambda a, *bounds: a[bounds[0]:bounds[1]] if len(bounds) == 2 else a[bounds[0]:] if bounds else a,
    "index": lambda a, *keys: _index(a, keys),
})


def _index(value, keys):
    for key in keys:
        value = value[key]
    return value


def _argument(tokens: list, at: int, dot: Any, scope: _Scope):
    kind, text = tokens[at]
    if kind == "paren" and text == "(":
        depth, end = 1, at + 1
        while depth:
            if end >= len(tokens):
                raise GoTemplateError("unclosed (")
            depth += {"(": 1, ")": -1}.get(tokens[end][1], 0)
            end += 1
        return _command(tokens[at + 1:end - 1], dot, scope), end
    if kind == "string":
        return _go_string(text), at + 1
    if kind == "int":
        return int(text), at + 1
    if kind == "field":
        return (dot if text == "." else _field(dot, text[1:].split("."))), at + 1
    if kind == "var":
        name, *names = text.split(".")
        return _field(scope.lookup(name), names), at + 1
    if kind == "ident" and text in ("true", "false"):
        return text == "true", at + 1
    raise GoTemplateError(f"unexpected {text!r}")


def _command(tokens: list, dot: Any, scope: _Scope) -> Any:
    if not tokens:
        raise GoTemplateError("empty command")
    kind, name = tokens[0]
    if kind == "ident" and name in ("and", "or"):
        value, at = None, 1
        while at < len(tokens):
            value, at = _argument(tokens, at, dot, scope)
            if _truth(value) != (name == "and"):
                return value
        return value
    if kind == "ident" and name in FUNCTIONS:
        args, at = [], 1
        while at < len(tokens):
            value, at = _argument(tokens, at, dot, scope)
            args.append(value)
        return FUNCTIONS[name](*args)
    value, at = _argument(tokens, 0, dot, scope)
    if at != len(tokens):
        raise GoTemplateError(f"cannot call {tokens[0][1]!r}")
    return value


def _pipeline(tokens: list, dot: Any, scope: _Scope):
    """(value, the variables it declares or assigns, ":=" / "=" / "" for a plain pipeline)."""
    at = next((i for i, (kind, _) in enumerate(tokens) if kind == "assign"), None)
    if at is None:
        return _command(tokens, dot, scope), [], ""
    names = [text for kind, text in tokens[:at] if kind == "var"]
    return _command(tokens[at + 1:], dot, scope), names, tokens[at][1]


def _run(nodes, dot: Any, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "action":
            value, names, operator = _pipeline(node[1], dot, scope)
            if operator == ":=":
                scope.variables[-1][names[0]] = value
            elif operator == "=":
                scope.assign(names[0], value)
            else:
                out.append(_shown(value))
        elif kind == "if":
            value, _, _ = _pipeline(node[1], dot, scope)
            scope.variables.append({})
            _run(node[2] if _truth(value) else node[3], dot, scope, out)
            scope.variables.pop()
        elif kind == "range":
            _range(node, dot, scope, out)


def _range(node, dot, scope: _Scope, out: list[str]) -> None:
    value, names, _ = _pipeline(node[1], dot, scope)
    items = list(value or [])
    if not items:
        scope.variables.append({})
        _run(node[3], dot, scope, out)
        scope.variables.pop()
    for i, item in enumerate(items):
        frame = dict(zip(names, (i, item) if len(names) == 2 else (item,)))
        scope.variables.append(frame)
        _run(node[2], item, scope, out)
        scope.variables.pop()


def render(source: str, values: dict) -> str:
    """`source` rendered with `values` (the map Ollama executes its template with)."""
    nodes, _, _ = _parse(_pieces(source), 0, ())
    out: list[str] = []
    _run(nodes, values, _Scope(values), out)
    return "".join(out)


# --- Go itself -----------------------------------------------------------------------------------
def find_go() -> str | None:
    """The `go` binary: on PATH, or Debian's golang-go under /usr/lib/go-*/bin."""
    found = shutil.which("go")
    if found:
        return found
    candidates = sorted(Path("/usr/lib").glob("go-*/bin/go"), reverse=True)
    return str(candidates[0]) if candidates else None


def go_render(source: str, cases: list[dict], timeout: float = 180) -> list[str] | None:
    """Each case ({"System", "Messages"}) rendered by Go's text/template; None when Go is not installed."""
    found = go_render_many([(source, cases)], timeout)
    return None if found is None else found[0]


def go_render_many(jobs: list[tuple[str, list[dict]]], timeout: float = 180) -> list[list[str]] | None:
    """Several (template, cases) jobs in one Go run (one compile); None when Go is not installed."""
    go = find_go()
    if go is None:
        return None
    payload = json.dumps([{"Template": source, "Cases": cases} for source, cases in jobs])
    with tempfile.TemporaryDirectory(prefix="lora-studio-go-") as folder:
        program = Path(folder) / "render.go"
        program.write_text(GO_PROGRAM, encoding="utf-8")
        env = {**os.environ, "GO111MODULE": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
        env.setdefault("GOCACHE", str(Path(folder) / "cache"))
        result = subprocess.run([go, "run", str(program)], input=payload, capture_output=True, text=True,
                                timeout=timeout, cwd=folder, env=env)
    if result.returncode != 0:
        raise GoTemplateError(f"go run failed ({result.returncode}): {result.stderr.strip()[:500]}")
    return json.loads(result.stdout)
