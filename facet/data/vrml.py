"""VRML 2.0 (`.wrl`), the format BU-3DFE and BU-4DFE ship their scans in: text <-> `Mesh`.

A text codec like `json`: `parse_wrl` turns the bytes of a file into a `Mesh` (plus the texture
file names it mentions) and `format_wrl` writes one; reading and writing files, textures
included, is `facet.data.meshio`'s job. Two layers:

- Syntax: a small recursive-descent parser for the node tree. It never looks at single numbers:
  a bracketed list of numbers is cut out whole (`Numbers`, its text) and converted by numpy only
  when `to_array` asks for it, which is what makes a 35k-vertex BU-4DFE frame parse in a fraction
  of a second. Covered: comments (`#` outside strings), commas as whitespace, any line breaks,
  `DEF`/`USE`, SF/MF nodes, strings, numbers, `NULL`; `PROTO`, `EXTERNPROTO` and `ROUTE` are
  skipped.
- Geometry: every `IndexedFaceSet` -- `coord Coordinate { point [...] }`, `coordIndex [...]` with
  -1 terminators (n-gons fan-triangulated), optional `texCoord` / `texCoordIndex` (per-corner uv,
  (F, 3, 2)) or `texCoord` alone (per-vertex uv, (N, 2)), optional per-vertex `color` -- is
  concatenated into one mesh, indices offset. Deliberate limits (BU files need none):
  `Transform` fields are not applied, per-face or indexed colours are dropped, and a mesh has one
  texture (the first `ImageTexture` found). Nodes nest at most `MAX_NESTING` deep (BU files:
  3), so a crafted file gets an error instead of exhausting Python's stack.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from facet.mesh import Mesh

HEADER = "#VRML V2.0"  # the first line of every VRML 2.0 file

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


MAX_NESTING = 100  # node levels; each costs a few Python frames, and Python allows ~1000


class Parser:
    """Recursive descent over VRML nodes; `where` (the file) prefixes every error."""

    def __init__(self, text: str, where: str):
        self.text, self.where, self.pos, self.defs = text, where, 0, {}
        self.depth = 0  # nodes open around the one being read

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
        if self.depth == MAX_NESTING:
            raise self.error(f"nodes nested more than {MAX_NESTING} levels deep")
        self.depth += 1
        try:
            return self._statement()
        finally:
            self.depth -= 1

    def _statement(self) -> Node | None:
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
    """The top-level nodes of a VRML 2.0 text after its `#VRML V2.0` line (keep that line's
    newline, so errors count lines from the top); ValueError naming `where` and the line."""
    if "#" in text:  # strip comments; skipped when there are none (the scan costs ~40 ms per 8 MB)
        text = _STRING_OR_COMMENT.sub(lambda m: m[0] if m[0][0] == '"' else " ", text)
    return Parser(text, where).statements()


# --- geometry: IndexedFaceSet nodes -> arrays -> Mesh ---------------------------------

def fan_triangulate(index: np.ndarray) -> np.ndarray:
    """Split -1-terminated polygons into triangle fans, in polygon order, without a Python loop.

    A polygon (i0, i1, ..., ik) becomes (i0, i1, i2), (i0, i2, i3), ... (i0, ik-1, ik); polygons
    with fewer than 3 corners have no area and are skipped (VRML requires 3; viewers skip them).

    Args:
        index: (I,) int64 `coordIndex`-style list; the final -1 may be missing.
    Returns:
        (F, 3) int64 positions into `index` (not vertex ids), so the same split can be applied
        to a parallel `texCoordIndex`.
    """
    ends = np.flatnonzero(index == -1)
    if len(index) and index[-1] != -1:
        ends = np.append(ends, len(index))  # last polygon without its terminator
    starts = np.concatenate([[0], ends[:-1] + 1])
    sizes = ends - starts
    keep = sizes >= 3
    starts, sizes = starts[keep], sizes[keep]
    tris_per_poly = sizes - 2
    poly = np.repeat(np.arange(len(starts)), tris_per_poly)  # (F,) polygon of each triangle
    first_tri = np.cumsum(tris_per_poly) - tris_per_poly  # (P,) index of a polygon's 1st triangle
    step = np.arange(len(poly)) - first_tri[poly]  # (F,) 0, 1, ... within each fan
    base = starts[poly]
    return np.stack([base, base + step + 1, base + step + 2], axis=1)  # (F, 3)


def _face_set(node: Node, where: str) -> dict:
    """Arrays of one IndexedFaceSet: verts, faces, and uv / colors when present."""
    f = node.fields
    sub = lambda name: getattr(f.get(name), "fields", {})  # fields of an SFNode, {} if absent
    if "coord" not in f:
        raise ValueError(f"{where}: an IndexedFaceSet has no coord")
    points = to_array(sub("coord").get("point", []), np.float32, "Coordinate point", where)
    if len(points) % 3:
        raise ValueError(f"{where}: Coordinate point has {len(points)} numbers, not x y z triples")
    verts = points.reshape(-1, 3)  # (N, 3)
    index = to_array(f.get("coordIndex", []), np.int64, "coordIndex", where)
    if len(index) and (index.min() < -1 or index.max() >= len(verts)):
        raise ValueError(f"{where}: coordIndex values span [{index.min()}, {index.max()}] but "
                         f"there are {len(verts)} points (valid: 0..{len(verts) - 1}, -1)")
    corners = fan_triangulate(index)  # (F, 3) positions into coordIndex
    out = {"verts": verts, "faces": index[corners]}

    if "texCoord" in f:
        tex = to_array(sub("texCoord").get("point", []), np.float32, "TextureCoordinate point",
                       where)
        if len(tex) % 2:
            raise ValueError(f"{where}: TextureCoordinate point has {len(tex)} numbers, not pairs")
        tex = tex.reshape(-1, 2)  # (U, 2)
        tex_index = to_array(f.get("texCoordIndex", []), np.int64, "texCoordIndex", where)
        by_vertex = len(tex_index) == 0 or np.array_equal(tex_index, index)
        if by_vertex and len(tex) >= len(verts):
            # No texCoordIndex (or a copy of coordIndex): the spec indexes texCoord by vertex.
            out["uv"] = tex[:len(verts)]  # (N, 2)
        elif len(tex_index) == 0:
            raise ValueError(f"{where}: {len(tex)} texture coordinates for {len(verts)} "
                             f"vertices and no texCoordIndex")
        else:
            terminated = lambda a: a if len(a) and a[-1] == -1 else np.append(a, -1)
            if not np.array_equal(terminated(tex_index) == -1, terminated(index) == -1):
                raise ValueError(f"{where}: texCoordIndex ({len(tex_index)} entries) does not "
                                 f"follow the polygons of coordIndex ({len(index)} entries)")
            if tex_index.min() < -1 or tex_index.max() >= len(tex):
                raise ValueError(f"{where}: texCoordIndex values span [{tex_index.min()}, "
                                 f"{tex_index.max()}] but there are {len(tex)} texture coordinates")
            out["uv"] = tex[tex_index[corners]]  # (F, 3, 2): same fan split as the faces

    per_vertex = f.get("colorPerVertex", ("TRUE",)) == ("TRUE",) and not f.get("colorIndex")
    if "color" in f and per_vertex:  # per-face or indexed colours are dropped (module docstring)
        colors = to_array(sub("color").get("color", []), np.float32, "Color color", where)
        if len(colors) != 3 * len(verts):
            raise ValueError(f"{where}: {len(colors) // 3} colours for {len(verts)} vertices")
        out["colors"] = colors.reshape(-1, 3)  # (N, 3)
    return out


def parse_wrl(data: bytes, where: str) -> tuple[Mesh, list[str]]:
    """Parse a VRML 2.0 file's IndexedFaceSets into one triangle mesh (without its texture).

    Args:
        data: the file's bytes; the first line must start with `#VRML V2.0`.
        where: the file name, prefixed to every error.
    Returns:
        (mesh, texture urls). The mesh has verts (N, 3) float32, faces (F, 3) int64 (n-gons
        fan-triangulated, several IndexedFaceSets concatenated); uv (F, 3, 2) when any set has
        a texCoordIndex, else (N, 2) when every set has per-vertex texCoord, else None (uv is
        dropped when some set lacks it); colors (N, 3) when every set has per-vertex colours.
        The urls are the first ImageTexture's (empty when there is none or no uv).
    Raises:
        ValueError: naming the file and the problem (header, syntax, indices, empty mesh, ...).
    """
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is harmless
    if not data.startswith(HEADER.encode()):
        first = data.split(b"\n", 1)[0][:40]
        raise ValueError(f"{where}: not a VRML 2.0 file (first line {first!r}, "
                         f"expected it to start with {HEADER!r})")
    text = data.decode("utf-8", errors="replace")
    # Drop the header line (a comment) but keep its newline so error line numbers stay right.
    text = text[text.find("\n"):] if "\n" in text else ""
    parts, texture_urls = [], None
    for node, urls in face_sets(parse_vrml(text, where)):
        parts.append(_face_set(node, where))
        texture_urls = texture_urls or urls
    if not parts:
        raise ValueError(f"{where}: no IndexedFaceSet found")

    offsets = np.cumsum([0] + [len(p["verts"]) for p in parts[:-1]])
    verts = np.concatenate([p["verts"] for p in parts])
    faces = np.concatenate([p["faces"] + o for p, o in zip(parts, offsets)])
    uv = None
    if all("uv" in p for p in parts):
        if all(p["uv"].ndim == 2 for p in parts):
            uv = np.concatenate([p["uv"] for p in parts])  # (N, 2)
        else:  # mixed layouts: per-vertex uv become per-corner, uv[faces] -> (F_part, 3, 2)
            uv = np.concatenate([p["uv"] if p["uv"].ndim == 3 else p["uv"][p["faces"]]
                                 for p in parts])  # (F, 3, 2)
    colors = (np.concatenate([p["colors"] for p in parts])
              if all("colors" in p for p in parts) else None)
    mesh = Mesh(verts=verts, faces=faces, uv=uv, colors=colors, source=where)
    return mesh, list(texture_urls or []) if uv is not None else []


def _rows(array: np.ndarray, spec: str) -> str:
    """Format (R, C) numbers as comma-separated VRML rows with one %-format call (fast)."""
    line = " ".join([spec] * array.shape[1])
    return ",\n".join([line] * len(array)) % tuple(array.ravel().tolist())


def format_wrl(mesh: Mesh, texture_url: str | None = None) -> str:
    """`mesh` as the text of a VRML 2.0 IndexedFaceSet in the BU-3DFE/BU-4DFE style.

    Per-vertex uv are written as a TextureCoordinate with a texCoordIndex equal to coordIndex;
    per-corner uv as one coordinate per corner. `texture_url` names the image beside the file.
    """
    lines = ["#VRML V2.0 utf8", "", "DEF face Transform {", "  children [ Shape {"]
    if texture_url is not None:
        lines.append(f'    appearance Appearance {{ texture ImageTexture {{ url "{texture_url}" }} '
                     f'}}')
    lines += ["    geometry IndexedFaceSet {",
              "      ccw TRUE solid FALSE convex TRUE creaseAngle 1.57",
              "      coord Coordinate { point [", _rows(mesh.verts, "%.6g"), "      ] }",
              "      coordIndex [", _rows(np.c_[mesh.faces, -np.ones(len(mesh.faces), int)], "%d"),
              "      ]"]
    if mesh.uv is not None:
        if mesh.uv.ndim == 2:  # per vertex: uv index == vertex index
            uv, uv_index = mesh.uv, mesh.faces
        else:  # per corner: one uv entry per (face, corner)
            uv, uv_index = mesh.uv.reshape(-1, 2), np.arange(3 * len(mesh.faces)).reshape(-1, 3)
        uv_index = np.c_[uv_index, -np.ones(len(uv_index), int)]  # (F, 4): -1 terminated
        lines += ["      texCoord TextureCoordinate { point [", _rows(uv, "%.6g"), "      ] }",
                  "      texCoordIndex [", _rows(uv_index, "%d"), "      ]"]
    if mesh.colors is not None:
        lines += ["      color Color { color [", _rows(mesh.colors, "%.4g"), "      ] }",
                  "      colorPerVertex TRUE"]
    lines += ["    }", "  } ]", "}", ""]
    return "\n".join(lines)
