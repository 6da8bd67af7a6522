"""pass@k for k = 1..N over a rollouts table, overall and per gold grade: a table and a plot.

The unbiased estimator of Chen et al. (2021): with n samples of which c are correct,
pass@k = 1 - C(n-c, k) / C(n, k), computed as a running product (no huge binomials).
A pair counts for pass@k only if it has at least k samples. Unparseable samples are wrong.

Only the distinct (grade, n, c) combinations are evaluated, so the cost is one group-by
over the rollouts, whatever their size.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from toolkit.core import columns as C
from toolkit.core.errors import UserError, missing_extra
from toolkit.core.options import opt
from toolkit.core.grades import GradeScale, get_scale
from toolkit.core.stagefolder import Key, StageConfig, StageResult, claim_output, input_hashes, run_stage, scale_of
from toolkit.rollouts import input_files, pass_rates, scan_rollouts
from toolkit.core.stagefolder.files import PASSK_FILES

log = logging.getLogger(__name__)

ALL = "all"
K = "k"
PASS_AT_K = "pass_at_k"
PAIRS = "pairs"
FILES = PASSK_FILES


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def passk_table(rollouts: "pl.DataFrame | pl.LazyFrame") -> pl.DataFrame:
    """Long table: k, grade (`all` or the gold value as text), pass_at_k (mean over pairs with >= k samples), pairs."""
    lf = rollouts.lazy() if isinstance(rollouts, pl.DataFrame) else rollouts
    combos = pass_rates(lf).group_by(C.GRADE, C.N_SAMPLES, C.N_CORRECT).len().collect()
    rows = []
    for grade, n, c, count in combos.iter_rows():
        for k in range(1, n + 1):
            rows.append((str(grade), k, pass_at_k(n, c, k), count))
    schema = {C.GRADE: pl.String, K: pl.Int64, PASS_AT_K: pl.Float64, "_count": pl.Int64}
    per = pl.DataFrame(rows, schema=schema, orient="row")
    both = pl.concat([per, per.with_columns(pl.lit(ALL).alias(C.GRADE))])
    return (
        both.group_by(C.GRADE, K)
        .agg(((pl.col(PASS_AT_K) * pl.col("_count")).sum() / pl.col("_count").sum()).alias(PASS_AT_K),
             pl.col("_count").sum().alias(PAIRS))
        .sort(K, C.GRADE)
    )


@dataclass
class PasskReport:
    table: pl.DataFrame  # the long table of passk_table
    markdown: str
    files: list[Path] = field(default_factory=list)

    @property
    def pairs(self) -> int:
        """Pairs with at least one rollout."""
        hit = self.table.filter((pl.col(K) == 1) & (pl.col(C.GRADE) == ALL))
        return int(hit[PAIRS][0]) if hit.height else 0

    def value(self, k: int, grade: "int | str" = ALL) -> float | None:
        hit = self.table.filter((pl.col(K) == k) & (pl.col(C.GRADE) == str(grade)))
        return hit[PASS_AT_K][0] if hit.height else None

    def summary(self) -> str:
        ks = self.table.filter(pl.col(C.GRADE) == ALL)[K].to_list()
        if not ks:
            return "pass@k: no rollouts"
        n = max(ks)
        return f"pass@1 {100 * self.value(1):.1f}% -> pass@{n} {100 * self.value(n):.1f}%"


def _columns(scale: GradeScale) -> list[tuple[str, str]]:
    return [(ALL, ALL)] + [(str(g.value), f"{g.label} {g.name}") for g in scale.grades]


def to_markdown(table: pl.DataFrame, scale: GradeScale) -> str:
    """pass@k per k (rows) and grade (columns), in percent; `-` where a grade has no pairs."""
    cols = _columns(scale)
    cell = {(g, k): (v, n) for g, k, v, n in table.select(C.GRADE, K, PASS_AT_K, PAIRS).iter_rows()}
    ks = sorted({k for _, k in cell})
    lines = ["| k | " + " | ".join(name for _, name in cols) + " |", "|---:|" + "---:|" * len(cols)]
    for k in ks:
        vals = [f"{100 * cell[(g, k)][0]:.1f}%" if (g, k) in cell else "-" for g, _ in cols]
        lines.append(f"| {k} | " + " | ".join(vals) + " |")
    lines.append("| pairs | " + " | ".join(str(cell[(g, 1)][1]) if (g, 1) in cell else "0" for g, _ in cols) + " |")
    if ks and len({cell[(ALL, k)][1] for k in ks}) > 1:
        lines.append("")
        lines.append("Pairs with fewer than k samples are left out of pass@k (their count per k is in passk.csv).")
    return "\n".join(lines)


def to_json(table: pl.DataFrame, scale: GradeScale) -> dict:
    out: dict = {"grade_scale": scale.name, K: sorted(set(table[K].to_list())), PASS_AT_K: {}, PAIRS: {}}
    for g, _ in _columns(scale):
        part = table.filter(pl.col(C.GRADE) == g).sort(K)
        if part.height:
            out[PASS_AT_K][g] = part[PASS_AT_K].to_list()
            out[PAIRS][g] = part[PAIRS].to_list()
    return out


def plot(table: pl.DataFrame, scale: GradeScale, path: Path) -> None:
    """pass@k curves, overall (thick) and per grade, as a PNG (matplotlib's Agg canvas, no pyplot)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise missing_extra("plots", "matplotlib") from None
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    ax = fig.add_subplot()
    for g, name in _columns(scale):
        part = table.filter(pl.col(C.GRADE) == g).sort(K)
        if part.height:
            ax.plot(part[K].to_list(), [100 * v for v in part[PASS_AT_K].to_list()], marker="o",
                    linewidth=2.8 if g == ALL else 1.4, color="black" if g == ALL else None, label=name)
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("pass@k (%)")
    ax.set_title("pass@k by gold grade")
    ks = sorted(set(table[K].to_list()))
    if ks:
        ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def passk_report(rollouts_df: "pl.DataFrame | pl.LazyFrame", scale: GradeScale, out_dir: "str | Path | None",
                 with_plot: bool = True) -> PasskReport:
    """Write passk.md, passk.json, passk.csv (and passk.png) into `out_dir` (None: no files); return the report."""
    if with_plot and out_dir is not None:
        try:
            import matplotlib  # noqa: F401  (fail before the work, not after)
        except ImportError:
            raise missing_extra("plots", "matplotlib") from None
    table = passk_table(rollouts_df)
    unknown = sorted(set(table[C.GRADE].to_list()) - {g for g, _ in _columns(scale)})
    if unknown:
        raise UserError(f"rollouts have gold grade(s) {', '.join(unknown)} not on scale `{scale.name}` "
                        f"(values: {scale.values}); pass the matching --scale")
    report = PasskReport(table, to_markdown(table, scale))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / FILES[0]).write_text(report.markdown + "\n", encoding="utf-8")
        (out / FILES[1]).write_text(json.dumps(to_json(table, scale), indent=2), encoding="utf-8")
        table.write_csv(out / FILES[2])
        report.files = [out / f for f in FILES[:3]]
        if with_plot:
            plot(table, scale, out / FILES[3])
            report.files.append(out / FILES[3])
    log.info("pass@k: %s", report.summary())
    return report


# -- the `toolkit passk` stage ------------------------------------------------------------------------


@dataclass
class PasskConfig(StageConfig):
    rollouts: str  # a rollouts folder (`toolkit sample`)
    out: str | None = opt(None, flags=("-o", "--out"), type="path",  # None: the table is only printed
                          help="Output folder (gets passk.md, passk.json, passk.csv, passk.png). Without it the table "
                               "is only printed.")
    plot: bool = opt(True, flags=("--plot/--no-plot",), show_default=True,
                     help="Also draw passk.png (needs matplotlib: pip install 'taosr-toolkit[plots]').")
    # None: the rollouts' manifest's
    scale: str | None = opt(None,
                            help="Grade scale naming the grades (default: the one recorded in the folder's manifest).")
    force: bool = opt(False, help="Redo even when the output is up to date.")

    def resolved(self) -> dict:
        return {"rollouts": str(self.rollouts), "plot": self.plot, "scale": self.scale_obj().name}

    def scale_obj(self) -> GradeScale:
        return get_scale(self.scale) if self.scale else scale_of(self.rollouts)


@dataclass
class PasskResult(StageResult):
    report: PasskReport | None = None
    STAGE = "passk"

    def headline(self) -> str:
        return self.report.summary() if self.report else f"{self.counts.get('pairs', 0)} pairs"

    def summary(self) -> str:
        if self.skipped or self.report is None:
            return super().summary()
        wrote = f"; wrote {', '.join(p.name for p in self.report.files)} to {self.out}" if self.out else ""
        return f"passk: {self.report.summary()}{wrote}"


def passk(cfg: PasskConfig) -> PasskResult:
    """pass@k of a rollouts folder; with `out`, written there as a stage folder (skipped when up to date)."""
    lf, scale = scan_rollouts(cfg.rollouts), cfg.scale_obj()
    if not cfg.out:
        return PasskResult(None, report=passk_report(lf, scale, None))  # type: ignore[arg-type]
    with claim_output(cfg.out, PasskResult.STAGE, [cfg.rollouts]):
        def write(tmp: Path) -> tuple[dict, dict]:
            written["report"] = passk_report(lf, scale, tmp, with_plot=cfg.plot)
            return {"pairs": written["report"].pairs}, {Key.GRADE_SCALE: scale.to_dict()}

        written: dict = {}
        result = run_stage(PasskResult, cfg, input_hashes(input_files(cfg.rollouts)), write)
    result.report = written.get("report")
    return result
