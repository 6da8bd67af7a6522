"""`toolkit gen-cot`: TaoSR1 stage 1 — teacher rationales become label-first SFT data.

pairs -> rules (retrieved) -> teacher prompt (gold grade given by default) -> k samples per
pair -> parse -> filter (format, grade agreement, length, repetition, near-duplicates) ->
SFT rows in TRL's conversational prompt/completion format, label first.

Work is split into shards of pairs; each finished shard is written atomically under
`.shards/` with a name keyed by the config and its pair ids, and skipped on rerun. A run
killed at any point and restarted ends with exactly the rows of an uninterrupted run.

Teacher modes: `free` (one generation per sample, a pair's k samples in one request with n = k;
for capable teachers such as DeepSeek-R1 — whose API takes n = 1: `--n-per-request 1`)
and `guided` (the five step headers are written into the assistant turn one by one and the
teacher completes each step, then the final `Grade:`; small local models follow the format
this way).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from toolkit.core import columns as C
from toolkit.core import lineage
from toolkit.core import parsing as P
from toolkit.cot_filters import FilterConfig, NearDuplicates, check
from toolkit.core.errors import UserError
from toolkit.generation.base import BackendConfig, LazyBackend, SamplingConfig
from toolkit.core.stagefolder import (StageConfig, atomic_write_text, input_hashes, manifest_of, mark_incomplete, model_inputs,
    sha256_json, write_manifest, write_parquet, writes_output)
from toolkit.core.pairs import load_pairs
from toolkit.core.prompts import PromptBuilder
from toolkit.core.shards import ShardRun, run_shards
from toolkit.core.stagefolder import scale_of
from toolkit.core.stagefolder.files import REJECTS_FILE, SFT_FILE, STATS_FILE

log = logging.getLogger(__name__)

STAGE = "gen-cot"
DROP_REASON = "drop_reason"
TEACHER = "teacher"


@dataclass
class GenCotConfig(StageConfig):
    pairs: str
    out: str
    split: str | None = "train"  # rows of this split only (when the input has splits)
    backend: BackendConfig = field(default_factory=BackendConfig)
    samples: int = 1  # k rationales per pair
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 320
    seed: int = 0
    mode: str = "guided"  # guided | free
    step_tokens: int = 48  # guided: token budget per step
    give_gold: bool = True
    order: str = P.LABEL_FIRST  # order of the SFT targets
    index: str | None = None  # rules index folder (toolkit build-index); pairs' rule_ids resolve against it
    rules_k: int = 3
    shard_size: int = 32
    limit: int | None = None
    filters: FilterConfig = field(default_factory=FilterConfig)
    force: bool = False  # regenerate every shard (not hashed)
    student_template: str = "student"
    teacher_template: str = "teacher"

    def __post_init__(self):
        if isinstance(self.backend, dict):
            self.backend = BackendConfig(**self.backend)
        if isinstance(self.filters, dict):
            self.filters = FilterConfig(**self.filters)
        if self.mode not in ("guided", "free"):
            raise UserError(f"--mode must be guided or free; got {self.mode!r}")
        if self.samples < 1 or self.shard_size < 1:
            raise UserError(f"--samples and --shard-size must be >= 1; got {self.samples}, {self.shard_size}")


@dataclass
class GenCotResult:
    out: Path
    stats: dict

    def summary(self) -> str:
        s = self.stats
        drops = ", ".join(f"{k}={v}" for k, v in s["dropped"].items() if v) or "none"
        return (
            f"gen-cot: {s['pairs']} pairs x {s['samples']} samples -> kept {s['kept']} rationales "
            f"({s['pairs_with_kept']} pairs); dropped: {drops}; teacher agreement {s['teacher_agreement']:.1%}; "
            f"shards {s['shards_done']} new, {s['shards_skipped']} reused -> {self.out / SFT_FILE}"
        )


def attach_rules(df: pl.DataFrame, index_dir: str | None, k: int, pairs_path: str | None = None) -> list[list[str]]:
    """Rule texts per pair: from the pairs' rule_ids (toolkit retrieve) or retrieved now."""
    if not index_dir:
        if C.RULE_IDS in df.columns and df[C.RULE_IDS].list.len().sum():
            log.warning("the pairs carry retrieved rule ids (toolkit retrieve) but no --index was given: the prompts get no rules; "
                        "pass --index with the index they were retrieved from")
        return [[] for _ in range(df.height)]
    from retrieval_index.index import RuleIndex

    index = RuleIndex.load(index_dir)
    if C.RULE_IDS in df.columns:
        if pairs_path:
            retrieved_from = (manifest_of(pairs_path) or {}).get("index_fingerprint")
            if retrieved_from and retrieved_from != index.manifest.get("fingerprint"):
                log.warning("%s: the rule ids were retrieved from another build of the index than --index %s (rules edited since?); "
                            "the prompts get the texts of this build; rerun `toolkit retrieve` to match", pairs_path, index_dir)
        return [[index.get(i)[C.SNIPPET_TEXT] for i in list(x or [])[:k]] for x in df[C.RULE_IDS].to_list()]
    from retrieval_index.retrieve import rule_texts

    cats = df[C.CATEGORY].to_list() if C.CATEGORY in df.columns else None
    return rule_texts(index, df[C.QUERY].to_list(), df[C.TITLE].to_list(), cats, k)


def step_openers(row: dict, scale) -> list[str]:
    """The start of each guided step: its header plus a few words that anchor it to the pair."""
    q, t = row.get(C.QUERY, ""), row.get(C.TITLE, "")
    return [
        f'1. Query understanding: The shopper searching for "{q}" wants',
        f'2. Item understanding: The item "{t[:80]}" is',
        "3. Category match: The product type",
        "4. Attribute match:",
        "5. Decision:",
        "Grade:",
    ]


def guided_generate(backend, prompts: list[list[dict]], rows: list[dict], sampling: SamplingConfig, step_tokens: int) -> list[tuple[str, str]]:
    """Fill the five steps one by one in the assistant turn, then the final grade."""
    texts = [""] * len(prompts)
    reasons = ["stop"] * len(prompts)
    openers = [step_openers(r, None) for r in rows]
    for s in range(len(openers[0])):
        header = openers[0][s]
        texts = [t + ("\n" if t else "") + op[s] for t, op in zip(texts, openers)]
        step = SamplingConfig(n=1, temperature=sampling.temperature, top_p=sampling.top_p, seed=None if sampling.seed is None else sampling.seed + 1000 * s,
                              max_tokens=step_tokens if header != "Grade:" else 3, stop=["\n"])
        gens = backend.generate([p + [{"role": "assistant", "content": t}] for p, t in zip(prompts, texts)], step)
        for i, g in enumerate(gens):
            part = g.texts[0].split("\n")[0].rstrip()
            texts[i] += part if part.startswith(" ") else " " + part
            if g.finish_reasons[0] == "length" and header != "Grade:":
                reasons[i] = "length"
    return list(zip(texts, reasons))


def generate_shard(backend, builder: PromptBuilder, rows: list[dict], rules: list[list[str]], cfg: GenCotConfig, shard: int) -> list[dict]:
    """Teacher samples for one shard of pairs, parsed and filtered (kept and rejected rows)."""
    labels = builder.scale.labels
    prompts, owners = [], []
    for r, rl in zip(rows, rules):
        tp = builder.teacher(r, rl) if cfg.give_gold else _teacher_no_gold(builder, r, rl)
        for s in range(cfg.samples):
            prompts.append(tp)
            owners.append((r, rl, s))
    owner_rows = [o[0] for o in owners]
    sampling = SamplingConfig(n=1, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=cfg.seed + 7919 * shard)
    if cfg.mode == "guided":
        outs = guided_generate(backend, prompts, owner_rows, sampling, cfg.step_tokens)
    else:  # one request per pair for its k samples (they share the prompt: one prefill, or one HTTP call)
        per_pair = dataclasses.replace(sampling, n=cfg.samples)
        gens = backend.generate(prompts[:: cfg.samples], per_pair)
        outs = [(t, f) for g in gens for t, f in zip(g.texts, g.finish_reasons)]
    dedupe = NearDuplicates(cfg.filters.near_duplicate)
    result = []
    for (row, rl, s), (text, finish), prompt in zip(owners, outs, prompts):
        gold = builder.scale.by_value(int(row[C.GRADE])).label
        parsed = P.parse_answer(text, labels, P.COT_FIRST, finish)
        reason = check(parsed, gold, cfg.filters, "\n".join(m["content"] for m in prompt))
        if reason is None and cfg.mode == "guided" and finish == "length":
            reason = "truncated_step"  # a step was cut at --step-tokens: the rationale reads cut off mid-sentence
        if reason is None and dedupe.seen(row[C.PAIR_ID], parsed.rationale):
            reason = "near_duplicate"
        result.append({
            C.PAIR_ID: row[C.PAIR_ID], C.SAMPLE_IDX: s, C.GRADE: int(row[C.GRADE]), C.TEXT: text, C.FINISH_REASON: finish,
            C.PARSE_STATUS: parsed.status, C.PRED_GRADE: builder.scale.by_label(parsed.label).value if parsed.label else None,
            C.RATIONALE: parsed.rationale if parsed.ok else None, DROP_REASON: reason,
            C.PROMPT: builder.student(row, rl),
            C.COMPLETION: [{"role": "assistant", "content": builder.target(gold, parsed.rationale)}] if reason is None else None,
        })
    return result


def _teacher_no_gold(builder: PromptBuilder, row: dict, rules: list[str]) -> list[dict]:
    msgs = builder.teacher(row, rules)
    g = builder.scale.by_value(int(row[C.GRADE]))
    user = msgs[-1]["content"].replace(f"The correct grade for this pair is {g.label} ({g.name}). Explain why", "Decide the grade. Explain it")
    user = user.replace(f'"Grade: {g.label}"', '"Grade: N"')
    return msgs[:-1] + [{"role": "user", "content": user}]


def _output_config(resolved: dict) -> dict:
    """The config minus knobs that cannot change a shard's rows, so a rerun with more retries reuses shards."""
    backend = {k: v for k, v in resolved["backend"].items() if k not in ("concurrency", "timeout_s", "max_retries", "n_per_request")}
    return {**resolved, "backend": backend}


@writes_output(STAGE)
def gen_cot(cfg: GenCotConfig, backend=None) -> GenCotResult:
    out = Path(cfg.out)
    df = load_pairs(cfg.pairs, cfg.split, cfg.limit)
    if df.height == 0:
        raise UserError(f"{cfg.pairs}: no pairs to generate for")
    scale = scale_of(cfg.pairs)
    teacher_template = cfg.teacher_template
    if cfg.mode == "guided" and teacher_template == "teacher":
        teacher_template = "teacher_guided"
    builder = PromptBuilder(scale, cfg.order, cfg.student_template, teacher_template)
    rules = attach_rules(df, cfg.index, cfg.rules_k, cfg.pairs)
    resolved = cfg.resolved()
    rows = df.to_dicts()
    items = list(zip(rows, rules))
    lazy = LazyBackend(cfg.backend, backend)
    teacher_files = input_hashes(model_inputs(cfg.backend.model))  # a teacher folder changed in place gets new shards
    teacher_hash = sha256_json(sorted(teacher_files.values()))

    def key_of(i: int, part: list) -> dict:
        return {"config": _output_config(resolved), "scale": scale.to_dict(), "pairs": [r[C.PAIR_ID] for r, _ in part], "rules": [rl for _, rl in part],
                "grades": [int(r[C.GRADE]) for r, _ in part], "teacher": teacher_hash}

    def work(i: int, part: list) -> pl.DataFrame:
        result = generate_shard(lazy.get(), builder, [r for r, _ in part], [rl for _, rl in part], cfg, i)
        return pl.DataFrame(result, schema_overrides=_SCHEMA, infer_schema_length=None)

    lazy.check()
    mark_incomplete(out, STAGE)  # the folder is ours from its first byte; complete when the manifest is written last
    run = run_shards(out, items, cfg.shard_size, key_of, work, "gen-cot shards", fresh=cfg.force)
    lazy.close()
    return _finish(cfg, out, run, df, scale, resolved, lazy.model_id, lineage.facts(cfg.order, rules), teacher_files, rules)


_MSG = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
_SCHEMA = {C.PRED_GRADE: pl.Int64, C.RATIONALE: pl.String, DROP_REASON: pl.String, C.COMPLETION: _MSG, C.PROMPT: _MSG}


def _finish(cfg, out: Path, run: ShardRun, df: pl.DataFrame, scale, resolved: dict, model_id: str, prompt_facts: dict,
            teacher_files: dict[str, str], rules: list[list[str]]) -> GenCotResult:
    allrows = run.read(out)
    if cfg.mode == "guided":  # here as well as per shard: shards written before this rule are reused, and get it too
        cut = pl.col(DROP_REASON).is_null() & (pl.col(C.FINISH_REASON) == "length")
        allrows = allrows.with_columns(pl.when(cut).then(pl.lit("truncated_step")).otherwise(pl.col(DROP_REASON)).alias(DROP_REASON))
    kept = allrows.filter(pl.col(DROP_REASON).is_null())
    rejects = allrows.filter(pl.col(DROP_REASON).is_not_null()).select(C.PAIR_ID, C.SAMPLE_IDX, C.GRADE, C.TEXT, C.FINISH_REASON, C.PARSE_STATUS, C.PRED_GRADE, DROP_REASON)
    sft = kept.select(C.PROMPT, C.COMPLETION, C.PAIR_ID, C.SAMPLE_IDX, C.GRADE, C.RATIONALE).with_columns(pl.lit(model_id).alias(TEACHER))
    # the rules each rationale was written from, for reviewers to check it against (`toolkit review push --kind cot`)
    texts = pl.DataFrame({C.PAIR_ID: df[C.PAIR_ID], C.RULE_TEXTS: rules}, schema={C.PAIR_ID: df[C.PAIR_ID].dtype, C.RULE_TEXTS: pl.List(pl.String)})
    sft = sft.join(texts.unique(C.PAIR_ID, keep="first"), on=C.PAIR_ID, how="left", maintain_order="left")
    parsed = allrows.filter(pl.col(C.PARSE_STATUS) == P.OK)
    agree = parsed.filter(pl.col(C.PRED_GRADE) == pl.col(C.GRADE)).height / parsed.height if parsed.height else 0.0
    reasons = ["grade_mismatch", "too_short", "too_long", "missing_steps", "repetitive", "copies_prompt", "truncated_step", "near_duplicate", *[s for s in P.STATUSES if s != P.OK]]
    dropped = {r: rejects.filter(pl.col(DROP_REASON) == r).height for r in reasons}
    stats = {
        "pairs": df.height, "samples": cfg.samples, "generated": allrows.height, "kept": sft.height,
        "pairs_with_kept": sft[C.PAIR_ID].n_unique(), "dropped": dropped, "teacher_agreement": agree,
        "parsed": parsed.height, "shards_done": run.done, "shards_skipped": run.skipped,
        "kept_by_grade": {str(g): n for g, n in sft.group_by(C.GRADE).len().sort(C.GRADE, descending=True).iter_rows()},
    }
    inputs = input_hashes([cfg.pairs] + ([cfg.index] if cfg.index else [])) | teacher_files
    final = {SFT_FILE: sft, REJECTS_FILE: rejects}
    for name, frame in final.items():
        write_parquet(frame, out / name)
    atomic_write_text(out / STATS_FILE, json.dumps(stats, indent=2))
    m = write_manifest(out, STAGE, resolved, inputs, stats, {"grade_scale": scale.to_dict(), "teacher": model_id, lineage.KEY: prompt_facts})
    log.info("gen-cot manifest %s", m["fingerprint"][:12])
    return GenCotResult(out, stats)
