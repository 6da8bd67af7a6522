"""Snippets: the atomic rules and knowledge facts the index holds, and the files they come from.

Source files, told apart by suffix:
- `.md` rules: each bullet is one rule, `- [R07] text {category: X; tags: a, b} (grade: <=3)`;
  the id in brackets, the `{...}` attributes and the `(grade: ...)` hint are optional, and the
  heading above a bullet becomes a tag (`## Brand and model` -> `brand-and-model`).
- `.jsonl` / `.json`: one object per snippet: text (required), id, kind, tags, grade_hint
  (or grade), category.
- `.yaml` / `.yml`: a list of such objects (or plain strings), or a mapping with any of
  `rules:`, `knowledge:` (same objects; kind preset), `brands:` and `synonyms:` lists.
- `.txt`: a category taxonomy, one `id - A > B > C` (Google product taxonomy) or `A > B > C`
  per line; each category becomes a knowledge snippet.

A snippet without an id gets a content hash of its kind and text, so ids are stable across runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from toolkit.core.errors import UserError

KINDS = ("rule", "knowledge")
FIELDS = ("id", "kind", "text", "tags", "grade_hint", "grade", "category")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
_HINT_RE = re.compile(r"^(<=|>=|<|>|=)?[A-Za-z0-9_.+-]+$")


def text_hash(text: str) -> str:
    """The embeddings cache key of a text (16 hex digits of sha256)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Snippet:
    id: str
    kind: str  # "rule" or "knowledge"
    text: str
    tags: tuple[str, ...] = ()
    grade_hint: str | None = None  # "<=3": the highest grade the rule allows; "2": the grade it gives
    category: tuple[str, ...] = ()  # category scope; empty = applies everywhere
    source: str = ""  # file:line

    @property
    def text_hash(self) -> str:
        return text_hash(self.text)


def make_id(kind: str, text: str) -> str:
    return ("k-" if kind == "knowledge" else "r-") + hashlib.sha256(f"{kind}\x00{text}".encode()).hexdigest()[:12]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _as_list(value, where: str, name: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(p.strip() for p in (value.split(",") if name == "tags" else [value]) if p.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return tuple(str(v).strip() for v in value if str(v).strip())
    raise UserError(f"{where}: `{name}` must be a string or a list of strings; got {value!r}")


def make_snippet(obj: dict, where: str, kind: str = "rule", extra_tags: tuple[str, ...] = ()) -> Snippet:
    """Validate one snippet record (from JSONL, YAML or a parsed Markdown bullet)."""
    unknown = [k for k in obj if k not in FIELDS]
    if unknown:
        raise UserError(f"{where}: unknown field `{unknown[0]}`; allowed: {', '.join(FIELDS)}")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{where}: `text` is missing or empty; every snippet needs its text")
    text = " ".join(text.split())
    kind = str(obj.get("kind") or kind).strip().lower()
    if kind not in KINDS:
        raise UserError(f"{where}: kind {kind!r} is not allowed; use one of: {', '.join(KINDS)}")
    sid = obj.get("id")
    sid = str(sid).strip() if sid is not None and str(sid).strip() else make_id(kind, text)
    if not _ID_RE.match(sid):
        raise UserError(f"{where}: id {sid!r} has characters other than letters, digits and _.:/-; rename it")
    hint = obj.get("grade_hint", obj.get("grade"))
    hint = None if hint is None or str(hint).strip() == "" else re.sub(r"^(<=|>=|<|>|=)\s+", r"\1", str(hint).strip())
    if hint is not None and not _HINT_RE.match(hint):
        raise UserError(f"{where}: grade hint {hint!r} is not a grade or a bound; write e.g. `2`, `<=3` or `>=3`")
    tags = tuple(dict.fromkeys(extra_tags + _as_list(obj.get("tags"), where, "tags")))
    return Snippet(sid, kind, text, tags, hint, _as_list(obj.get("category"), where, "category"), where)


# -- Markdown ---------------------------------------------------------------

_BULLET = re.compile(r"^(\s*)(?:[-*+]|\d+[.)])\s+(.*)$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LEAD_ID = re.compile(r"^(?:\[([^\]\s]+)\]|\*\*([^*\s]+)\*\*:?)\s+")
_TRAIL_GRADE = re.compile(r"\s*\(grade:\s*([^()]*)\)\s*$", re.I)
_TRAIL_ATTRS = re.compile(r"\s*\{([^{}]*)\}\s*$")


def _parse_bullet(body: str, where: str) -> dict:
    obj: dict = {}
    m = _LEAD_ID.match(body)
    if m:
        obj["id"] = m.group(1) or m.group(2)
        body = body[m.end():]
    while True:
        if m := _TRAIL_GRADE.search(body):
            obj["grade_hint"] = m.group(1).strip()
        elif m := _TRAIL_ATTRS.search(body):
            for part in m.group(1).split(";"):
                key, sep, value = part.partition(":")
                key = key.strip().lower()
                if not sep or key not in ("category", "tags", "kind", "id", "grade"):
                    raise UserError(f"{where}: attribute {{{part.strip()}}} is not understood; write {{category: X}}, "
                                    "{tags: a, b} or {kind: knowledge}, several separated by `;`")
                obj["grade_hint" if key == "grade" else key] = value.strip()
        else:
            break
        body = body[: m.start()]
    obj["text"] = body.strip()
    return obj


def load_markdown(path: Path) -> list[Snippet]:
    """One rule per bullet; indented lines right below continue it; headings (## and below) tag their bullets."""
    bullets: list[list] = []  # [line number, text parts, section tags]
    section: tuple[str, ...] = ()
    open_bullet = fenced = False
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced, open_bullet = not fenced, False
        elif fenced:
            continue
        elif h := _HEADING.match(line):
            section = (slug(h.group(2)),) if len(h.group(1)) > 1 and slug(h.group(2)) else ()
            open_bullet = False
        elif b := _BULLET.match(line):
            bullets.append([no, [b.group(2)], section])
            open_bullet = True
        elif open_bullet and line.strip() and line[:1].isspace():
            bullets[-1][1].append(line.strip())
        else:  # a blank or paragraph line ends the bullet above; paragraphs are not rules
            open_bullet = False
    out = []
    for no, parts, tags in bullets:
        where = f"{path}:{no}"
        out.append(make_snippet(_parse_bullet(" ".join(parts), where), where, "rule", tags))
    return out


# -- JSONL / YAML -----------------------------------------------------------


def _records(items, path: Path, kind: str, key: str = "") -> list[Snippet]:
    if not isinstance(items, list):
        raise UserError(f"{path}: `{key}` must be a list; got a {type(items).__name__}")
    out = []
    for i, obj in enumerate(items, 1):
        where = f"{path}:{key + '[' if key else 'item '}{i}{']' if key else ''}"
        if isinstance(obj, str):
            obj = {"text": obj}
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected a mapping with `text` (or a string); got {type(obj).__name__}")
        out.append(make_snippet(obj, where, kind))
    return out


def load_jsonl(path: Path) -> list[Snippet]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            return _records(json.loads(text), path, "rule")
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: invalid JSON at line {e.lineno} ({e.msg}); fix the file") from None
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{no}: not valid JSON ({e.msg}); write one JSON object per line") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{no}: a JSON {type(obj).__name__}, not an object; write one object per line")
        out.append(make_snippet(obj, f"{path}:{no}"))
    return out


def brand_snippet(obj, where: str) -> Snippet:
    if isinstance(obj, str):
        obj = {"name": obj}
    if not isinstance(obj, dict) or not str(obj.get("name") or "").strip():
        raise UserError(f"{where}: a brand needs `name` (and optionally makes, category, aliases, note)")
    allowed = {"id", "name", "makes", "category", "aliases", "note", "tags"}
    if bad := [k for k in obj if k not in allowed]:
        raise UserError(f"{where}: unknown field `{bad[0]}` for a brand; allowed: {', '.join(sorted(allowed))}")
    name = str(obj["name"]).strip()
    text = f"{name} is a brand" + (f" of {obj['makes']}" if obj.get("makes") else "") + "."
    if aliases := _as_list(obj.get("aliases"), where, "aliases"):
        text += f" Also written {', '.join(aliases)}."
    if obj.get("note"):
        text += f" {obj['note']}"
    tags = ("brand",) + _as_list(obj.get("tags"), where, "tags")
    return make_snippet({"id": obj.get("id") or f"brand-{slug(name)}", "text": text, "tags": list(tags),
                         "category": obj.get("category")}, where, "knowledge")


def synonym_snippet(obj, where: str) -> Snippet:
    if isinstance(obj, list):
        obj = {"terms": obj}
    terms = _as_list(obj.get("terms"), where, "terms") if isinstance(obj, dict) else ()
    if len(terms) < 2:
        raise UserError(f"{where}: a synonym entry needs `terms` with two or more words or phrases")
    allowed = {"id", "terms", "note", "tags", "category"}
    if bad := [k for k in obj if k not in allowed]:
        raise UserError(f"{where}: unknown field `{bad[0]}` for a synonym entry; allowed: "
                        f"{', '.join(sorted(allowed))}")
    quoted = [f'"{t}"' for t in terms]
    text = f"{', '.join(quoted[:-1])} and {quoted[-1]} name the same thing in a shopping query."
    if obj.get("note"):
        text += f" {obj['note']}"
    tags = ("synonym",) + _as_list(obj.get("tags"), where, "tags")
    return make_snippet({"id": obj.get("id"), "text": text, "tags": list(tags), "category": obj.get("category")},
                        where, "knowledge")


def load_yaml(path: Path) -> list[Snippet]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"{path}:{mark.line + 1 if mark else ''} invalid YAML ({getattr(e, 'problem', e)}); "
                        "fix the file") from None
    if data is None:
        return []
    if isinstance(data, list):
        return _records(data, path, "rule")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a list of snippets or a mapping with rules/knowledge/brands/synonyms; got "
                        f"a {type(data).__name__}")
    allowed = ("rules", "knowledge", "brands", "synonyms")
    if bad := [k for k in data if k not in allowed]:
        raise UserError(f"{path}: unknown section `{bad[0]}`; allowed: {', '.join(allowed)}")
    out = (_records(data.get("rules") or [], path, "rule", "rules")
           + _records(data.get("knowledge") or [], path, "knowledge", "knowledge"))
    for key, make in (("brands", brand_snippet), ("synonyms", synonym_snippet)):
        items = data.get(key) or []
        if not isinstance(items, list):
            raise UserError(f"{path}: `{key}` must be a list; got a {type(items).__name__}")
        out += [make(obj, f"{path}:{key}[{i}]") for i, obj in enumerate(items, 1)]
    return out


# -- taxonomy ---------------------------------------------------------------

_TAXONOMY_LINE = re.compile(r"^\s*(?:(\d+)\s+-\s+)?(.+?)\s*$")


def load_taxonomy(path: Path) -> list[Snippet]:
    """A category taxonomy: `id - A > B > C` or `A > B > C` per line; `#` lines are comments."""
    out = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _TAXONOMY_LINE.match(line)
        num, cat = m.group(1), " > ".join(p.strip() for p in m.group(2).split(">"))
        sid = f"cat-{num}" if num else None
        where = f"{path}:{no}"
        out.append(make_snippet({"id": sid, "text": f"Product category: {cat}", "tags": ["taxonomy"]}, where,
                                "knowledge"))
    return out


# -- all sources ------------------------------------------------------------

LOADERS = {".md": load_markdown, ".markdown": load_markdown, ".jsonl": load_jsonl, ".ndjson": load_jsonl,
           ".json": load_jsonl, ".yaml": load_yaml, ".yml": load_yaml, ".txt": load_taxonomy}


def load_file(path: "str | Path") -> list[Snippet]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; check the path" if not path.exists()
                        else f"{path}: is a folder; pass the rules and knowledge files themselves")
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise UserError(f"{path}: unknown snippet file type `{path.suffix}`; use .md (bullets), .jsonl, .yaml or .txt "
                        "(taxonomy)")
    try:
        snippets = loader(path)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid UTF-8 (byte {e.start}); re-save the file as UTF-8") from None
    if not snippets:
        hint = {"md": "bullets like `- [R01] rule text (grade: <=2)`", "txt": "one category per line"}.get(
            path.suffix.lower().lstrip(".")[:3], "one snippet with `text` per entry")
        raise UserError(f"{path}: no snippets found (empty file?); it needs {hint}")
    return snippets


def load_snippets(paths: list["str | Path"]) -> list[Snippet]:
    """All snippets of all files, in file order; a duplicate id is an error naming both places."""
    if not paths:
        raise UserError("no rules or knowledge files given; pass e.g. demo/guideline.md")
    resolved = [Path(p).resolve() for p in paths]
    if len(set(resolved)) < len(resolved):
        twice = next(p for p, r in zip(paths, resolved) if resolved.count(r) > 1)
        raise UserError(f"{twice} is given twice; pass each rules or knowledge file once")
    seen: dict[str, Snippet] = {}
    out = []
    for p in paths:
        for s in load_file(p):
            if s.id in seen:
                same = "the same text twice" if seen[s.id].text == s.text else "two snippets"
                raise UserError(f"duplicate snippet id `{s.id}` ({same}): {seen[s.id].source} and {s.source}; give "
                                "each snippet its own id or remove one")
            seen[s.id] = s
            out.append(s)
    return out


def _short_names(paths: list[Path]) -> list[str]:
    """Each path's shortest trailing part that no other path shares: `rules.md`, or `teamA/rules.md` beside
    `teamB/rules.md`."""
    parts = [p.resolve().parts for p in paths]
    out = []
    for mine in parts:
        n = 1
        while n < len(mine) and sum(other[-n:] == mine[-n:] for other in parts) > 1:
            n += 1
        out.append("/".join(mine[-n:]))
    return out


def portable_sources(snippets: list[Snippet], paths: list["str | Path"]) -> list[Snippet]:
    """Each snippet's `source` as `<file name>:<place>`, not the path it was read from: an index built from the same
    guideline in another folder (another checkout, a moved project) is then byte-identical, and the stages after it
    are not redone. Two files of the same name keep as much of their folders as tells them apart."""
    given = [Path(p) for p in paths]
    prefixes = sorted(((f"{p}:", f"{short}:") for p, short in zip(given, _short_names(given))),
                      key=lambda x: -len(x[0]))
    out = []
    for s in snippets:
        long, short = next(((a, b) for a, b in prefixes if s.source.startswith(a)), ("", ""))
        out.append(replace(s, source=short + s.source[len(long):]) if long else s)
    return out


# -- category scope ---------------------------------------------------------


def _scope_names(scope: str) -> set[str]:
    """A scope's own path, and, for a top-level scope, the names it lists (`Grocery, Beauty & Pet Supplies`)."""
    names = {scope.lower()}
    if ">" not in scope:
        names |= {p.strip().lower() for p in re.split(r",|&|\band\b", scope) if p.strip()}
    return names


def scope_matches(scopes: tuple[str, ...] | list[str], category: str | None) -> bool:
    """Does a snippet limited to `scopes` apply to an item of `category`?

    Unscoped snippets and items without a category always match. A scope matches an item
    whose category path equals it or lies below it; a top-level scope naming several
    categories (`Grocery, Beauty & Pet Supplies`) also matches items under any of them.
    """
    if not scopes or not category:
        return True
    cat = " > ".join(p.strip() for p in category.lower().split(">"))
    top = cat.split(" > ", 1)[0]
    for scope in scopes:
        s = " > ".join(p.strip() for p in scope.lower().split(">"))
        if cat == s or cat.startswith(s + " > ") or top in _scope_names(scope):
            return True
    return False
