"""VRML 2.0 syntax: a small recursive-descent parser for the node tree of a `.wrl` file.

`parse_vrml(text)` turns a file into `Node`s (type + fields). It never looks at single numbers:
a bracketed list of numbers is cut out whole as `Numbers` (its text) and converted by numpy only
when `to_array` is asked for it, which is what makes a 35k-vertex BU-4DFE frame parse in a
fraction of a second. Covered: comments (`#` outside strings), commas as whitespace, any line
breaks, `DEF`/`USE`, SF/MF node, string and number fields, `NULL`. `PROTO`, `EXTERNPROTO` and
`ROUTE` are skipped; Script-style interface declarations are not supported. `facet.vrml` builds
meshes from the IndexedFaceSets this finds.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

# A string is kept whole (it may hold '#'); a comment runs from '#' to the end of the line.
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|#[^\n]*')
# One token after whitespace and commas (commas are whitespace in VRML): a brace or bracket, a
# quoted string, a bare word (name, keyword or number), or anything else, which is an error.
_TOKEN = re.compile(r'[\s,]*(?:([{}\[\]])|("(?:[^"\\]|\\.)*")|([^\s,{}\[\]"]+)|(\S)|$)')
_NUMBER_START = frozenset("0123456789+-.")


@dataclass
class Numbers:
    """The raw text of a bracketed number list, converted only when a field is used."""

    text: str


@dataclass
class Node:
    """A VRML node: its type name and fields (name -> Numbers, strings, nodes or scalars)."""

    type: str
    fields: dict[str, object] = field(default_factory=dict)


class Parser:
    """Recursive descent over VRML nodes; `where` (the file) prefixes every error."""

    def __init__(self, text: str, where: str):
        self.text, self.where, self.pos, self.defs = text, where, 0, {}

    def error(self, problem: str) -> ValueError:
        line = self.text.count("\n", 0, self.pos) + 1
        return ValueError(f"{self.where}: line {line}: {problem}")

    def peek(self) -> tuple[str, str, int]:
        """The next token as (kind, text, end) with kind punct/string/word/eof, not consumed."""
        m = _TOKEN.match(self.text, self.pos)
        if m.group(4) is not None:
            self.pos = m.start(4)
            raise self.error(f"unexpected character {m.group(4)!r} (unclosed string?)")
        for kind, group in (("punct", 1), ("string", 2), ("word", 3)):
            if m.group(group) is not None:
                return kind, m.group(group), m.end()
        return "eof", "", m.end()

    def take(self, kind: str, text: str | None = None) -> str:
        got_kind, got, end = self.peek()
        if got_kind == "eof":
            raise self.error(f"unexpected end of file, expected {text or kind} "
                             f"(a '{{' or '[' is never closed?)")
        if got_kind != kind or (text is not None and got != text):
            raise self.error(f"expected {text or kind}, found {got or 'end of file'!r}")
        self.pos = end
        return got

    def statements(self, until: str | None = None) -> list[Node]:
        """Nodes up to the closing `until` bracket (or the end of the file when None)."""
        nodes = []
        while True:
            kind, tok, end = self.peek()
            if kind == "eof" and until is None:
                return nodes
            if kind == "punct" and tok == until:
                self.pos = end
                return nodes
            node = self.statement()
            if node is not None:
                nodes.append(node)

    def statement(self) -> Node | None:
        """One node, `DEF name node`, `USE name`, NULL; PROTO/EXTERNPROTO/ROUTE skipped (None)."""
        word = self.take("word")
        if word == "DEF":
            name = self.take("word")
            self.defs[name] = node = self.statement()
            return node
        if word == "USE":
            name = self.take("word")
            if name not in self.defs:
                raise self.error(f"USE {name} before DEF {name}")
            return self.defs[name]
        if word == "NULL":
            return None
        if word == "ROUTE":  # ROUTE a.out TO b.in
            for _ in range(3):
                self.take("word")
            return None
        if word in ("PROTO", "EXTERNPROTO"):
            self.take("word")
            self.skip_group("[", "]")
            if word == "PROTO":
                self.skip_group("{", "}")
            else:
                self.value()  # the url list
            return None
        node = Node(word)
        self.take("punct", "{")
        while True:
            kind, tok, end = self.peek()
            if kind == "punct" and tok == "}":
                self.pos = end
                return node
            name = self.take("word")  # before value(): an assignment evaluates its right side first
            node.fields[name] = self.value()

    def value(self) -> object:
        """A field value: Numbers, list of strings, list of nodes, a node, or scalar tokens."""
        kind, tok, end = self.peek()
        if kind == "punct" and tok == "[":
            self.pos = end
            kind, tok, end = self.peek()
            if kind == "word" and tok[0] in _NUMBER_START:  # numbers: cut out the whole slice
                close = self.text.find("]", self.pos)
                if close < 0:
                    raise self.error("'[' is never closed")
                numbers = Numbers(self.text[self.pos:close])
                stray = [i for i in map(numbers.text.find, "{}[") if i >= 0]
                if stray:  # a ']' is missing: the slice ran into the next node or field
                    self.pos += min(stray)
                    raise self.error("'[' is never closed before the next node or field")
                self.pos = close + 1
                return numbers
            if kind == "string":
                strings = []
                while self.peek()[0] == "string":
                    strings.append(self.take("string")[1:-1])
                self.take("punct", "]")
                return strings
            return self.statements(until="]")
        if kind == "string":
            self.pos = end
            return [tok[1:-1]]
        if kind == "word" and (tok[0] in _NUMBER_START or tok in ("TRUE", "FALSE")):
            scalars = []
            while (k := self.peek())[0] == "word" and (k[1][0] in _NUMBER_START
                                                      or k[1] in ("TRUE", "FALSE")):
                scalars.append(k[1])
                self.pos = k[2]
            return tuple(scalars)
        return self.statement()

    def skip_group(self, open_: str, close: str) -> None:
        """Skip a balanced `open_ ... close` group (PROTO interfaces and bodies)."""
        self.take("punct", open_)
        depth = 1
        while depth:
            kind, tok, end = self.peek()
            if kind == "eof":
                raise self.error(f"'{open_}' is never closed")
            depth += (tok == open_) - (tok == close) if kind == "punct" else 0
            self.pos = end


def to_array(value: object, dtype: type, what: str, where: str) -> np.ndarray:
    """Convert a field's numbers to a flat array; ValueError naming the field on bad tokens."""
    if isinstance(value, tuple):
        value = Numbers(" ".join(value))
    if isinstance(value, list) and not value:
        return np.zeros(0, dtype)
    if not isinstance(value, Numbers):
        raise ValueError(f"{where}: {what} must be a list of numbers")
    text = value.text.replace(",", " ")
    try:
        # numpy 2.x raises on a token it cannot read; older versions warned and stopped early.
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            return np.fromstring(text, dtype=dtype, sep=" ")
    except (ValueError, DeprecationWarning):
        bad = next((t for t in text.split() if not _parses(t, dtype)), "?")
        raise ValueError(f"{where}: {what}: {bad[:40]!r} is not a valid "
                         f"{'integer' if dtype is np.int64 else 'number'}") from None


def _parses(token: str, dtype: type) -> bool:
    try:
        (int if dtype is np.int64 else float)(token)
        return True
    except ValueError:
        return False


def face_sets(nodes: list[Node]) -> Iterator[tuple[Node, list[str] | None]]:
    """Yield (IndexedFaceSet, texture urls of its Shape or None) in file order, each node once."""
    seen = set()
    stack = [(n, None) for n in reversed(nodes)]  # depth first; reversed so pops go in order
    while stack:
        node, urls = stack.pop()
        if not isinstance(node, Node) or id(node) in seen:  # a USEd node is the same geometry
            continue
        seen.add(id(node))
        if node.type == "Shape":
            texture = getattr(node.fields.get("appearance"), "fields", {}).get("texture")
            if isinstance(texture, Node) and texture.type == "ImageTexture":
                urls = texture.fields.get("url")
        if node.type == "IndexedFaceSet":
            yield node, urls
            continue
        for value in reversed(list(node.fields.values())):
            children = value if isinstance(value, list) else [value]
            stack.extend((c, urls) for c in reversed(children) if isinstance(c, Node))


def parse_vrml(text: str, where: str) -> list[Node]:
    """The top-level nodes of a VRML 2.0 text whose header line is already removed.

    Args:
        text: the file's text after its `#VRML V2.0 ...` line; start it with the header's
            newline so error messages count lines from the top of the file.
        where: the file name, prefixed to every error.
    Raises:
        ValueError: naming the file and line for a syntax error.
    """
    if "#" in text:  # strip comments; skipped when there are none (the scan costs ~40 ms per 8 MB)
        text = _STRING_OR_COMMENT.sub(lambda m: m[0] if m[0][0] == '"' else " ", text)
    return Parser(text, where).statements()
