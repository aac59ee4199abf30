"""Does a route's DQL matcher take a log record? A small evaluator for the forms routes commonly use.

OpenPipeline sends a record down the first enabled route whose matcher holds (tenant-setup.md, open
question 2: no public source says so outright; the UI lists routes in order and says a record takes
"the first matching route", which is what labkit assumes). So the preflight asks each route before
the lab's one whether it takes a tagged cart log. Known forms: `true`/`false`, `and`/`or`/`not`,
parentheses, `==`/`!=`/`<`/`<=`/`>`/`>=` against a string, number or boolean, `isNull`, `isNotNull`,
`matchesValue` (`*` wildcards) and `matchesPhrase` (both case-insensitive), `contains`, `startsWith`,
`endsWith` (case-sensitive, their DQL default). Anything else is `Unknown`: the caller says it cannot tell, and names the route.
DQL's null rules hold: a missing field compares as null, so `==`/`!=` on it do not match.
"""
from __future__ import annotations

import re
from fnmatch import fnmatchcase


class Unknown(Exception):
    """A matcher form labkit does not evaluate (the message quotes it)."""


_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|<=|>=|<|>|\(|\)|,)'
                    r"|(?P<name>`[^`]+`|[A-Za-z_][\w.\[\]]*))")
_WORDS = {"and", "or", "not", "true", "false", "null"}


def _tokens(text: str) -> list[tuple[str, object]]:
    out, pos = [], 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise Unknown(f"cannot read {text[pos:].strip()[:40]!r}")
        kind = m.lastgroup
        raw = m.group(kind)
        value = {"str": lambda: re.sub(r"\\(.)", r"\1", raw[1:-1]), "num": lambda: float(raw),
                 "name": lambda: raw.strip("`")}.get(kind, lambda: raw)()
        if kind == "name" and raw.lower() in _WORDS:
            kind, value = "word", raw.lower()
        out.append((kind, value))
        pos = m.end()
    return out


def matches(matcher: str, record: dict) -> bool:
    """Whether `matcher` holds for `record` (field -> value); Unknown for a form labkit cannot read."""
    parser = _Parser(_tokens(matcher), record)
    result = parser.expression()
    if parser.pos != len(parser.tokens):
        raise Unknown(f"cannot read the matcher past {parser.pos} tokens")
    return result is True


class _Parser:
    """Recursive descent: or > and > not > comparison > call/literal/parentheses. Values are
    True/False/None (null) for conditions."""

    def __init__(self, tokens, record):
        self.tokens, self.record, self.pos = tokens, record, 0

    def peek(self, kind=None, value=None):
        if self.pos >= len(self.tokens):
            return None
        tok = self.tokens[self.pos]
        return tok if (kind in (None, tok[0]) and value in (None, tok[1])) else None

    def take(self, kind=None, value=None):
        tok = self.peek(kind, value)
        if tok is None:
            raise Unknown(f"expected {value or kind} at token {self.pos + 1}")
        self.pos += 1
        return tok

    def expression(self):
        left = self.conjunction()
        while self.peek("word", "or"):
            self.take()
            right = self.conjunction()
            left = True if True in (left, right) else (None if None in (left, right) else False)
        return left

    def conjunction(self):
        left = self.negation()
        while self.peek("word", "and"):
            self.take()
            right = self.negation()
            left = False if False in (left, right) else (None if None in (left, right) else True)
        return left

    def negation(self):
        if self.peek("word", "not"):
            self.take()
            value = self.negation()
            return None if value is None else not value
        return self.comparison()

    def comparison(self):
        left = self.operand()
        tok = self.peek("op")
        if tok and tok[1] in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            return _compare(tok[1], left, self.operand())
        return left

    def operand(self):
        kind, value = self.take()
        if kind == "op" and value == "(":
            inner = self.expression()
            self.take("op", ")")
            return inner
        if kind == "word" and value in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[value]
        if kind in ("str", "num"):
            return value
        if kind == "name" and self.peek("op", "("):
            return self.call(value)
        if kind == "name":
            return self.record.get(value)
        return self._fail(value)

    def _fail(self, value):
        raise Unknown(f"unexpected {value!r}")

    def call(self, name: str):
        self.take("op", "(")
        args = [self.operand()]
        while self.peek("op", ","):
            self.take()
            args.append(self.operand())
        self.take("op", ")")
        fn = _FUNCTIONS.get(name)
        if fn is None:
            raise Unknown(f"the function {name}()")
        return fn(*args)


def _compare(op: str, left, right):
    if left is None or right is None:
        return None  # DQL: a comparison with null is null, which does not match
    if isinstance(left, str) and isinstance(right, float):
        try:
            left = float(left)
        except ValueError:
            return None
    if type(left) is not type(right) and not (isinstance(left, (int, float)) and isinstance(right, (int, float))):
        return op == "!="
    return {"==": left == right, "!=": left != right, "<": left < right, "<=": left <= right,
            ">": left > right, ">=": left >= right}[op]


def _text(fn, case_sensitive: bool):
    """A string test as DQL has it: null on a non-string; case as the function's default."""
    def test(value, needle, *rest):
        if not isinstance(value, str) or not isinstance(needle, str):
            return None
        return fn(value, needle) if case_sensitive else fn(value.lower(), needle.lower())
    return test


_FUNCTIONS = {
    "isNull": lambda v: v is None,
    "isNotNull": lambda v: v is not None,
    "matchesValue": _text(fnmatchcase, False),
    "matchesPhrase": _text(lambda v, p: re.search(r"(?<!\w)" + re.escape(p) + r"(?!\w)", v) is not None, False),
    "contains": _text(lambda v, n: n in v, True),
    "startsWith": _text(str.startswith, True),
    "endsWith": _text(str.endswith, True),
}
