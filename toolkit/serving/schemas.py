"""Request and response bodies of the scoring service (pydantic: validation and the OpenAPI schema).

A request scores a batch of query–item pairs, in either of two shapes:
* one query and its items (a search request): `{"query": "...", "items": [{"title": "..."}, ...]}`
* independent pairs: `{"pairs": [{"query": "...", "title": "..."}, ...]}`

Item fields are the canonical pair columns (`title` required; `description`, `attributes`,
`category`, `brand` optional) plus an optional `id` echoed back and optional `rules` (guideline
rule texts for the prompt; by default the server's rules index, if it has one, or none). Texts
are cleaned as `toolkit ingest` cleans them (whitespace runs become one space; attributes given
as an object become its JSON with sorted keys), so a pair scores exactly as it does after
`toolkit ingest` + `toolkit score`.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from toolkit.core import columns as C

_SPACE = re.compile(r"\s+")

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
ITEM_FIELDS = (C.TITLE, C.DESCRIPTION, C.ATTRIBUTES, C.CATEGORY, C.BRAND)


def clean_text(value: Any) -> str:
    """A field as `toolkit ingest` stores it: objects as sorted-key JSON, whitespace collapsed, stripped."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return _SPACE.sub(" ", str(value)).strip()


class Item(BaseModel):
    """One item of a search result page."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={
        "examples": [{"title": "Nordvik Trailstride Men's Running Shoe", "brand": "Nordvik"}]})

    id: Optional[Union[str, int]] = Field(None, description="Your id for the item; echoed back.")
    title: NonEmpty = Field(description="Item title (required, non-empty).")
    description: Optional[str] = None
    attributes: Optional[Union[dict[str, Any], str]] = Field(None,
                                                             description="Attributes: an object, or its JSON text.")
    category: Optional[str] = Field(None, description="Category path, e.g. `Shoes > Athletic > Running`.")
    brand: Optional[str] = None
    rules: Optional[list[NonEmpty]] = Field(None, description="Guideline rule texts for this pair's prompt (default: "
                                                              "the server's rules index, if any).")


class Pair(Item):
    """A query and one item."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={
        "examples": [{"query": "running shoes", "title": "Nordvik Trailstride Men's Running Shoe"}]})

    query: NonEmpty = Field(description="The search query (required, non-empty).")


class ScoreRequest(BaseModel):
    """Either `query` + `items`, or `pairs`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"query": "running shoes",
             "items": [{"id": "sku-1", "title": "Nordvik Trailstride Men's Running Shoe"},
                       {"id": "sku-2", "title": "Aurelo Heritage Leather Oxford Dress Shoe"}]},
            {"pairs": [{"query": "running shoes", "title": "Keystrel Tempo Women's Road Running Shoe"}],
             "explain": True},
        ]},
    )

    query: Optional[NonEmpty] = Field(None, description="The query shared by all `items`.")
    items: Optional[list[Item]] = Field(None, description="Items to score against `query`.")
    pairs: Optional[list[Pair]] = Field(None, description="Independent query–item pairs (instead of query + items).")
    explain: bool = Field(False, description="Also generate each pair's rationale (label first, then the reason); "
                                             "slow, for debugging.")

    @model_validator(mode="after")
    def _one_shape(self):
        if self.pairs is not None and (self.items is not None or self.query is not None):
            raise ValueError("send either `query` + `items` or `pairs`, not both")
        if self.pairs is None:
            if self.items is None:
                raise ValueError("no pairs to score: send `query` + `items`, or `pairs`")
            if self.query is None:
                raise ValueError("`items` need a `query`")
        if not (self.items if self.pairs is None else self.pairs):
            raise ValueError("the list of items/pairs is empty; send at least one")
        return self

    def rows(self) -> list[dict]:
        """Canonical pair rows (cleaned as by `toolkit ingest`) plus `id` and `rules`."""
        if self.pairs is not None:
            entries = [(p.query, p) for p in self.pairs]
        else:
            entries = [(self.query, it) for it in self.items]
        out = []
        for query, it in entries:
            row = {C.QUERY: clean_text(query), **{f: clean_text(getattr(it, f)) for f in ITEM_FIELDS}}
            row["id"], row["rules"] = it.id, it.rules
            out.append(row)
        return out


class GradeProb(BaseModel):
    grade: int
    label: str
    name: str
    prob: float


class PairScore(BaseModel):
    id: Optional[Union[str, int]] = None
    query: str
    title: str
    grade_probs: list[float] = Field(description="P(grade) for each grade, best grade first (as `toolkit score` "
                                                 "writes it).")
    grades: list[GradeProb] = Field(description="The same probabilities with each grade's value, label and name, best "
                                                "grade first.")
    pred_grade: int = Field(description="argmax of grade_probs (ties go to the better grade).")
    pred_name: str
    cumpt_grade: Optional[int] = Field(None, description="CumPT grade: the best grade k with P(top)+...+P(k) >= beta "
                                                         "(when a tier rule is loaded).")
    tier: Optional[str] = Field(None,
                                description="Tier of cumpt_grade, e.g. Good / Mid / Bad (when a tier rule is loaded).")
    beta: Optional[float] = Field(None, description="The β of the loaded tier rule.")
    rationale: Optional[str] = Field(None, description="With explain=true: the generated reason (the whole answer "
                                                       "when it does not start with a grade label).")
    explain_grade: Optional[int] = Field(None, description="With explain=true: the grade the generated answer starts "
                                                           "with (null if unparseable).")
    explain_text: Optional[str] = Field(None, description="With explain=true: the whole generated answer.")


class ScoreResponse(BaseModel):
    model: str
    scale: str
    beta: Optional[float] = None
    tiers: Optional[dict[str, list[int]]] = None
    results: list[PairScore]
    elapsed_ms: float


class ErrorResponse(BaseModel):
    error: str = Field(description="What was wrong and how to fix it.")
    detail: Optional[list[dict[str, Any]]] = None


def describe_errors(errors: list[dict]) -> str:
    """pydantic/FastAPI validation errors as one line: `items[2].title: Field required; ...`."""
    parts = []
    for e in errors[:5]:
        loc = [x for x in e.get("loc", ()) if x != "body"]
        where = "".join(f"[{x}]" if isinstance(x, int) else (f".{x}" if i else str(x))
                        for i, x in enumerate(loc)) or "body"
        msg = e.get("msg", "invalid")
        if e.get("type") == "string_too_short":
            msg = "must not be empty"
        parts.append(f"{where}: {msg.removeprefix('Value error, ')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more
