"""DQL's words: the tokenizer and the error every DQL part raises (a position for Grail's 400)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


class DqlError(Exception):
    def __init__(self, message: str, position: int | None = None):
        super().__init__(message)
        self.message, self.position = message, position


@dataclass
class Tok:
    kind: str  # str, num, dur, ident, op, eof
    value: Any
    pos: int


DQL_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<tick>`[^`]*`)
  | (?P<dur>\d+(?:\.\d+)?(?:ms|ns|us|s|m|h|d|w)\b)
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][\w.]*)
  | (?P<op>==|!=|<=|>=|\[\]|[<>=(){},:|+\-*/@\[\]])
""", re.X)
DURATION_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60 * 10**9,
               "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}


def tokenize(query: str) -> list[Tok]:
    toks, i = [], 0
    while i < len(query):
        m = DQL_TOKEN_RE.match(query, i)
        if not m:
            raise DqlError(f"Unexpected character '{query[i]}'", i)
        kind = m.lastgroup
        text = m.group(0)
        if kind == "str":
            toks.append(Tok("str", json.loads(text) if "\\" in text else text[1:-1], i))
        elif kind == "tick":
            toks.append(Tok("ident", text[1:-1], i))
        elif kind == "dur":
            num, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()
            toks.append(Tok("dur", int(float(num) * DURATION_NS[unit]), i))
        elif kind == "num":
            toks.append(Tok("num", float(text) if "." in text else int(text), i))
        elif kind != "ws":
            toks.append(Tok(kind, text, i))
        i = m.end()
    toks.append(Tok("eof", None, len(query)))
    return toks

