"""Grade scales and the mappings from source labels onto them.

A grade scale is an ordered list of grades, best first. Each grade has an integer
value (what datasets store), a name for humans and a label string the model emits.
Label strings must be single tokens for first-token scoring (digits are, in the
Llama, Qwen and SmolLM tokenizers).

TaoSR1's default scale: 4 Excellent / 3 Related / 2 Mismatch / 1 Irrelevant.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.errors import UserError


@dataclass(frozen=True)
class Grade:
    value: int
    name: str
    label: str


@dataclass(frozen=True)
class GradeScale:
    """An ordered grade scale, best grade first."""

    name: str
    grades: tuple[Grade, ...]

    def __post_init__(self):
        if len(self.grades) < 2:
            raise UserError(f"grade scale `{self.name}` has {len(self.grades)} grade(s); a scale needs at least 2")
        for field in ("value", "name", "label"):
            seen = [getattr(g, field) for g in self.grades]
            dupes = sorted({str(x) for x in seen if seen.count(x) > 1})
            if dupes:
                raise UserError(f"grade scale `{self.name}` repeats {field} {', '.join(dupes)}; "
                                "each grade needs its own")
        values = [g.value for g in self.grades]
        if values != sorted(values, reverse=True):
            raise UserError(f"grade scale `{self.name}` must list grades best first with decreasing values; "
                            f"got {values}")
        for g in self.grades:
            if not g.label or any(ch.isspace() for ch in g.label):
                raise UserError(f"grade scale `{self.name}`: label {g.label!r} of grade {g.value} "
                                "must be non-empty with no whitespace")

    # -- lookups ---------------------------------------------------------
    @property
    def values(self) -> list[int]:
        return [g.value for g in self.grades]

    @property
    def labels(self) -> list[str]:
        return [g.label for g in self.grades]

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.grades]

    def __len__(self) -> int:
        return len(self.grades)

    def by_value(self, value: int) -> Grade:
        for g in self.grades:
            if g.value == value:
                return g
        raise UserError(f"grade {value!r} is not on scale `{self.name}` (values: {self.values})")

    def by_label(self, label: str) -> Grade | None:
        for g in self.grades:
            if g.label == label:
                return g
        return None

    def same_grades(self, other: "GradeScale") -> bool:
        """The same grade values and labels, best first (names may differ): data, models and rules fit together."""
        return (self.labels, self.values) == (other.labels, other.values)

    def describe(self) -> str:
        return ", ".join(f"{g.label} {g.name}" for g in self.grades)

    def to_dict(self) -> dict:
        return {"name": self.name,
                "grades": [{"value": g.value, "name": g.name, "label": g.label} for g in self.grades]}

    @classmethod
    def from_dict(cls, data: dict, where: str = "grade scale") -> "GradeScale":
        if not isinstance(data, dict) or "grades" not in data:
            raise UserError(f"{where}: expected a mapping with `name` and `grades` (a list of value/name/label)")
        grades = []
        for i, g in enumerate(data["grades"]):
            try:
                value = int(g["value"])
                grades.append(Grade(value=value, name=str(g.get("name", value)), label=str(g.get("label", value))))
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{where}: grade #{i + 1} needs an integer `value` (and optional `name`, `label`); "
                                f"got {g!r}")
        return cls(name=str(data.get("name", "custom")), grades=tuple(grades))


def _scale(name: str, *names: str) -> GradeScale:
    n = len(names)
    return GradeScale(name, tuple(Grade(n - i, nm, str(n - i)) for i, nm in enumerate(names)))


SCALES: dict[str, GradeScale] = {
    "taosr4": _scale("taosr4", "Excellent", "Related", "Mismatch", "Irrelevant"),
    "esci": _scale("esci", "Exact", "Substitute", "Complement", "Irrelevant"),
    "three": _scale("three", "Exact", "Partial", "Irrelevant"),
    "five": _scale("five", "Perfect", "Excellent", "Good", "Fair", "Bad"),
    "binary": _scale("binary", "Relevant", "Irrelevant"),
}
DEFAULT_SCALE = "taosr4"


def get_scale(spec: "str | GradeScale | dict | None" = None) -> GradeScale:
    """A built-in scale by name, or a custom scale from a YAML/JSON file or a mapping."""
    if spec is None:
        return SCALES[DEFAULT_SCALE]
    if isinstance(spec, GradeScale):
        return spec
    if isinstance(spec, dict):
        return GradeScale.from_dict(spec)
    if spec in SCALES:
        return SCALES[spec]
    path = Path(spec)
    if path.suffix in (".yaml", ".yml", ".json") and path.exists():
        import yaml

        return GradeScale.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")), where=str(path))
    raise UserError(f"unknown grade scale {spec!r}; use one of {', '.join(SCALES)} "
                    "or a YAML file with `name` and `grades`")


# -- mapping source labels onto a scale ----------------------------------------


def normalize_label(raw: object) -> str:
    """Canonical text of a source label: stripped, lower-case, `4.0` -> `4`."""
    text = str(raw).strip()
    try:
        f = float(text)
        if math.isfinite(f) and f == int(f):
            return str(int(f))
    except ValueError:
        pass
    return text.lower()


@dataclass(frozen=True)
class GradeMapper:
    """Maps source labels to grade values: by a table, or numeric thresholds, or identity."""

    scale: GradeScale
    table: dict[str, int] | None = None
    thresholds: tuple[float, ...] | None = None  # descending; value >= t[i] -> grades[i]

    def __post_init__(self):
        if self.table is not None:
            bad = sorted({v for v in self.table.values() if v not in self.scale.values})
            if bad:
                raise UserError(f"grade map targets {bad} not on scale `{self.scale.name}` "
                                f"(values: {self.scale.values})")
        if self.thresholds is not None:
            t = list(self.thresholds)
            if len(t) != len(self.scale) - 1:
                raise UserError(
                    f"--thresholds needs {len(self.scale) - 1} numbers for the {len(self.scale)}-grade scale "
                    f"`{self.scale.name}`; got {len(t)} ({t})"
                )
            if t != sorted(t, reverse=True):
                raise UserError(f"--thresholds must be in decreasing order (best grade first); got {t}")

    def describe(self) -> str:
        if self.table is not None:
            return "map " + ", ".join(f"{k}={v}" for k, v in self.table.items())
        if self.thresholds is not None:
            return "thresholds " + ",".join(str(t) for t in self.thresholds)
        return "identity"

    def map(self, raw: object) -> int | None:
        """The grade value for a source label, or None when the label is unknown."""
        key = normalize_label(raw)
        if self.table is not None:
            return self.table.get(key)
        if self.thresholds is not None:
            try:
                x = float(key)
            except ValueError:
                return None
            if not math.isfinite(x):
                return None
            for t, g in zip(self.thresholds, self.scale.grades):
                if x >= t:
                    return g.value
            return self.scale.grades[-1].value
        try:
            v = int(key)
        except ValueError:
            g = self.scale.by_label(str(raw).strip())
            return g.value if g else None
        return v if v in self.scale.values else None


def parse_grade_map(text: str, scale: GradeScale) -> dict[str, int]:
    """Parse `E=4,S=3,C=2,I=1` (or a YAML/JSON file of the same) into a label table."""
    path = Path(text)
    if path.suffix in (".yaml", ".yml", ".json") and path.exists():
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise UserError(f"{path}: a grade map file must be a mapping of source label to grade value")
        items = list(data.items())
    else:
        items = []
        for part in re.split(r"[,;]", text):
            if not part.strip():
                continue
            if "=" not in part:
                raise UserError(f"--grade-map entry {part.strip()!r} has no `=`; write it like `E=4,S=3,C=2,I=1`")
            k, v = part.rsplit("=", 1)
            items.append((k, v))
    table = {}
    for k, v in items:
        try:
            table[normalize_label(k)] = int(str(v).strip())
        except ValueError:
            raise UserError(f"--grade-map: {k}={v} must map to an integer grade value of scale "
                            f"`{scale.name}` {scale.values}")
    return table


def parse_thresholds(text: "str | list | tuple") -> tuple[float, ...]:
    parts = text if isinstance(text, (list, tuple)) else [p for p in str(text).split(",") if p.strip()]
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise UserError(f"--thresholds must be comma-separated numbers like 3.0,2.5,2.0; got {text!r}")


# Built-in mappings: (format, scale) -> table or thresholds.
_ESCI = {"e": 4, "exact": 4, "s": 3, "substitute": 3, "c": 2, "complement": 2, "i": 1, "irrelevant": 1}
BUILTIN_MAPS: dict[tuple[str, str], dict | tuple] = {
    ("esci", "taosr4"): _ESCI,
    ("esci", "esci"): _ESCI,
    ("esci", "three"): {"e": 3, "exact": 3, "s": 2, "substitute": 2, "c": 1, "complement": 1, "i": 1,
                        "irrelevant": 1},
    ("esci", "binary"): {"e": 2, "exact": 2, "s": 2, "substitute": 2, "c": 1, "complement": 1, "i": 1,
                         "irrelevant": 1},
    ("wands", "taosr4"): {"exact": 4, "partial": 3, "irrelevant": 1},
    ("wands", "three"): {"exact": 3, "partial": 2, "irrelevant": 1},
    ("wands", "binary"): {"exact": 2, "partial": 2, "irrelevant": 1},
    ("wands-binary", "binary"): {"relevant": 2, "not relevant": 1},
    ("multicpr", "binary"): {"match": 2, "not match": 1, "匹配": 2, "不匹配": 1},
    ("multicpr", "taosr4"): {"match": 4, "not match": 1, "匹配": 4, "不匹配": 1},
    ("qbqtc", "three"): {"2": 3, "1": 2, "0": 1},
    ("crowdflower", "taosr4"): {"4": 4, "3": 3, "2": 2, "1": 1},
    ("crowdflower", "three"): {"4": 3, "3": 2, "2": 1, "1": 1},
    ("crowdflower", "binary"): {"4": 2, "3": 2, "2": 1, "1": 1},
    # Home Depot: mean of three 1-3 ratings; thresholds (best grade first), configurable.
    ("homedepot", "taosr4"): (3.0, 2.5, 2.0),
    ("homedepot", "three"): (2.67, 2.0),
    ("homedepot", "binary"): (2.33,),
}


def builtin_mapper(fmt: str, scale: GradeScale) -> GradeMapper | None:
    spec = BUILTIN_MAPS.get((fmt, scale.name))
    if spec is None:
        return None
    if isinstance(spec, tuple):
        return GradeMapper(scale, thresholds=spec)
    return GradeMapper(scale, table=dict(spec))
