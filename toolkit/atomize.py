"""`toolkit atomize`: an LLM splits a prose guideline into candidate atomic rules for review.

guideline (.txt or .md) -> passages (paragraphs grouped up to `max_passage_chars`, never across a
heading) -> per passage, the LLM rewrites it as one self-contained rule per line -> parse the
bullet lines -> drop empty, too short, too long, truncated and duplicate rules -> two files:

- `rules.md`: the candidates in the rules format of demo/guideline.md (`## Section`, then
  `- [A01] rule text`), loadable by `toolkit build-index` once reviewed;
- `rules.jsonl`: one object per candidate with its provenance (source file and sha256, section,
  passage number and line span, the passage text, the model) and `status: candidate`.

The rules are candidates: a person reviews, edits and merges them into the real guideline.
Headings are Markdown `#` lines; in plain text, short lines without end punctuation that start a block.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.core.errors import UserError
from toolkit.generation.base import BackendConfig, LazyBackend, SamplingConfig
from toolkit.core.options import opt
from toolkit.core.stagefolder import (input_hashes, Key, sha256_file, StageConfig, StageResult, write_stage,
                                      writes_output)
from toolkit.core.stagefolder.files import RULES_JSONL, RULES_MD

log = logging.getLogger(__name__)

STAGE = "atomize"
DROPS = ("none", "too_short", "too_long", "truncated", "duplicate")

SYSTEM = "You turn annotation guidelines for e-commerce search relevance into short, atomic, checkable rules."
USER = (
    "Rewrite the guideline passage below as a list of atomic rules for judging whether a product matches a "
    "shopping query. Each rule is one self-contained sentence that can be checked on its own. Keep the "
    "passage's meaning and add nothing that it does not say. Write one rule per line, each line starting "
    "with \"- \". If the passage contains no rule, write \"- NONE\".\n\nSection: {section}\n\nPassage:\n{passage}"
)
PREFILL = "- "

_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.*\S)\s*$")
_MD_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


@dataclass
class AtomizeConfig(StageConfig):
    guideline: str
    out: str = opt(flags=("-o", "--out"), type="path",
                   help="Output folder: rules.md (candidate rules), rules.jsonl (provenance).")
    backend: BackendConfig = field(default_factory=BackendConfig)
    max_passage_chars: int = opt(1200, show_default=True, help="Guideline text per LLM request.")
    max_tokens: int = opt(384, show_default=True, help="Token budget of the rules for one passage.")
    temperature: float = opt(0.0, show_default=True,
                             help="Sampling temperature (0 = greedy: the same rules every run).")
    seed: int = opt(0, show_default=True,
                    help="Base seed; each shard and prompt gets its own seed from it (reruns give the same samples).")
    prefill: bool = opt(True, flags=("--no-prefill",), negate=True,  # start the answer with "- "
                        help="Do not start the answer with '- ' (for servers without assistant prefill).")
    id_prefix: str = opt("A", show_default=True, help="Rule ids are PREFIX01, PREFIX02, ...")
    min_rule_chars: int = 15
    max_rule_chars: int = 400

    def __post_init__(self):
        if isinstance(self.backend, dict):
            self.backend = BackendConfig(**self.backend)
        if self.max_passage_chars < 200:
            raise UserError(f"--max-passage-chars must be >= 200; got {self.max_passage_chars}")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", self.id_prefix):
            raise UserError(f"--id-prefix must be letters, digits, _ or - starting with a letter; "
                            f"got {self.id_prefix!r}")


@dataclass
class Passage:
    section: str
    text: str
    first_line: int
    last_line: int


@dataclass
class AtomizeResult(StageResult):
    STAGE = STAGE

    def headline(self) -> str:
        return f"{self.counts['passages']} passages -> {self.counts['rules']} candidate rules"

    def where(self) -> str:
        return f"-> {self.out / RULES_MD} (review before use)"


def _is_heading(line: str, prev: str, nxt: str, plain: bool) -> str | None:
    """A Markdown heading; in plain text, a short line without end punctuation that starts a block."""
    if m := _MD_HEADING.match(line):
        return m.group(1)
    s = line.strip()
    if (plain and s and len(s) <= 60 and len(s.split()) <= 8 and not re.search(r"[.:;,!?)]$", s)
            and (nxt.strip() or not prev.strip())):
        return s
    return None


def split_passages(text: str, max_chars: int, plain: bool = True) -> list[Passage]:
    """Paragraphs grouped into passages of at most `max_chars` (a longer paragraph stays whole)."""
    lines = text.splitlines()
    passages: list[Passage] = []
    section, buf, start = "", [], 0

    def flush():
        while buf and not buf[-1].strip():
            buf.pop()
        if buf:
            passages.append(Passage(section, "\n".join(buf).strip(), start, start + len(buf) - 1))
        buf.clear()

    for no, line in enumerate(lines, 1):
        heading = _is_heading(line, lines[no - 2] if no > 1 else "", lines[no] if no < len(lines) else "", plain)
        if heading is not None:
            flush()
            section = heading
            continue
        if not buf and not line.strip():
            continue
        if buf and len("\n".join(buf)) + len(line) + 1 > max_chars and not line.strip() == "":
            flush()
        if not buf:
            start = no
        buf.append(line)
    flush()
    return passages


def clean_rule(text: str) -> str:
    """One rule line without markup that the rules format would misread (ids, {attrs}, grade hints)."""
    text = re.sub(r"\*\*|__|`", "", text).strip()
    while (shorter := re.sub(r"^(?:\[[^\]]*\]|\d+[.)]|[-*\u2022]|rule\s*\d*\s*:)\s+", "", text, flags=re.I)) != text:
        text = shorter  # leading ids, numbers, nested bullets, "Rule 3:"
    text = re.sub(r"\s*\{[^{}]*\}\s*$", "", text)
    text = re.sub(r"\s*\(grade:[^()]*\)\s*$", "", text, flags=re.I)
    return " ".join(text.replace("{", "(").replace("}", ")").split()).strip(" \"'")


def parse_rules(answer: str, finish_reason: str, cfg: AtomizeConfig, counts: dict) -> list[str]:
    lines = answer.splitlines()
    if finish_reason == "length" and lines and not re.search(r"[.!?)\"']\s*$", lines[-1]):
        lines = lines[:-1]  # the answer ran out of tokens in this line
        counts["truncated"] += 1
    rules = []
    for line in lines:
        m = _BULLET.match(line)
        if not m:
            continue
        rule = clean_rule(m.group(1))
        if not rule or rule.rstrip(".").upper() == "NONE":
            counts["none"] += 1
        elif len(rule) < cfg.min_rule_chars:
            counts["too_short"] += 1
        elif len(rule) > cfg.max_rule_chars:
            counts["too_long"] += 1
        else:
            rules.append(rule)
    return rules


def _key(rule: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", rule.lower()).strip()


@writes_output(STAGE)
def atomize(cfg: AtomizeConfig, backend=None) -> AtomizeResult:
    src = Path(cfg.guideline)
    if not src.is_file():
        raise UserError(f"{src}: no such guideline file; pass a .txt or .md file")
    text = src.read_text(encoding="utf-8", errors="replace")
    passages = split_passages(text, cfg.max_passage_chars, plain=src.suffix.lower() != ".md")
    if not passages:
        raise UserError(f"{src}: no text to atomize")
    lazy = LazyBackend(cfg.backend, backend)
    prompts = []
    for p in passages:
        msgs = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": USER.format(section=p.section or "(none)", passage=p.text)}]
        prompts.append(msgs + ([{"role": "assistant", "content": PREFILL}] if cfg.prefill else []))
    sampling = SamplingConfig(n=1, temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed)
    try:
        gens = lazy.get().generate(prompts, sampling)
    finally:
        lazy.close()
    counts = {k: 0 for k in DROPS}
    seen: set[str] = set()
    records = []
    source_sha = sha256_file(src)
    model = lazy.model_id
    for i, (p, g) in enumerate(zip(passages, gens)):
        answer = (PREFILL if cfg.prefill else "") + g.texts[0]
        for rule in parse_rules(answer, g.finish_reasons[0], cfg, counts):
            if _key(rule) in seen:
                counts["duplicate"] += 1
                continue
            seen.add(_key(rule))
            records.append({
                "id": f"{cfg.id_prefix}{len(records) + 1:02d}", "text": rule, "section": p.section,
                "status": "candidate", "source": str(src), "source_sha256": source_sha, "passage": i,
                "lines": [p.first_line, p.last_line],
                "passage_text": p.text, "model": model,
            })
    stats = {"passages": len(passages), "rules": len(records), "dropped": counts,
             "passages_without_rules": len(passages) - len({r["passage"] for r in records})}

    def write(tmp: Path) -> tuple[dict, dict]:
        (tmp / RULES_MD).write_text(render_markdown(records, src, model), encoding="utf-8")
        (tmp / RULES_JSONL).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                       encoding="utf-8")
        return stats, {Key.MODEL: model}

    # always runs: an LLM pass is what the user asked for
    return write_stage(AtomizeResult, cfg, input_hashes([src]), write)


def render_markdown(records: list[dict], src: Path, model: str) -> str:
    lines = [f"# Candidate rules from {src.name}", "",
             f"Written by `toolkit atomize` with {model} from `{src.name}`; every rule is a candidate to review, "
             "edit or delete "
             f"before it joins a guideline. Provenance of each rule: rules.jsonl (same ids).", ""]
    section = None
    for r in records:
        if r["section"] != section:
            section = r["section"]
            lines += ["", f"## {section or 'General'}"]
        lines.append(f"- [{r['id']}] {r['text']}")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"
