"""Retrieval index (issue 3): snippet sources, build-index, incremental rebuild, search, filters,
retrieval for pairs, refusals, CLI.

Most tests use a tiny hashing embedder (no model); those marked `slow` load all-MiniLM-L6-v2
once per session (the `minilm` fixture in conftest.py).
Run: .venv/bin/python -m pytest tests/test_retrieval_index.py -q          (all)
     .venv/bin/python -m pytest tests/test_retrieval_index.py -q -m "not slow"   (no model)
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import polars as pl
import pytest

from retrieval_index.build import BuildIndexConfig, build_index
from retrieval_index.index import RuleIndex
from retrieval_index.lexical import tokenize
from retrieval_index.retrieve import RetrieveConfig, retrieve
from retrieval_index.snippets import load_file, load_snippets, scope_matches
from retrieval_index.store import AUTO_APPROX_MIN, IndexSpec, build_faiss, search_faiss
from toolkit.core import columns as C
from toolkit.core.errors import UserError

pytest.importorskip("faiss")


class HashEmbedder:
    """Bag of words hashed into `dim` buckets, L2-normalised; records every text it encodes."""

    def __init__(self, dim: int = 64, model_id: str = "test/hash-embedder"):
        self.dim, self.model_id, self.encoded = dim, model_id, []

    def encode(self, texts, *, query=False):
        self.encoded += list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in tokenize(t):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


RULES_MD = """# Test guideline

Intro paragraph, not a rule.

## Accessories
- [A1] An accessory such as a phone case for a queried phone is Mismatch. (grade: 2)
- [A2] A charger that fits the named laptop
  is Excellent for a charger query. {tags: compat} (grade: 4)

## Food
- [F1] A listed wheat ingredient makes gluten free pasta a Mismatch. {category: Grocery, Beauty & Pet Supplies} (grade: 2)
- Shoe size contradicting the query size is Mismatch. {category: Clothing > Shoes; tags: size, fit}
  1. [N1] A nested numbered rule about colour being secondary.

```
- [X9] not a rule: inside a code fence
```
"""


@pytest.fixture
def rules_md(tmp_path):
    p = tmp_path / "rules.md"
    p.write_text(RULES_MD)
    return p


@pytest.fixture
def hash_emb():
    return HashEmbedder()


def _build(sources, out, emb, **kw):
    return build_index(BuildIndexConfig([str(s) for s in sources], str(out), model=emb.model_id, **kw), embedder=emb)


# -- snippet sources -----------------------------------------------------------


def test_markdown_bullets_are_rules(rules_md):
    s = {x.id: x for x in load_file(rules_md)}
    assert list(s)[:3] == ["A1", "A2", "F1"] and len(s) == 5 and "X9" not in s
    assert s["A1"].grade_hint == "2" and s["A1"].tags == ("accessories",) and s["A1"].kind == "rule"
    assert s["A2"].text == "A charger that fits the named laptop is Excellent for a charger query."
    assert s["A2"].tags == ("accessories", "compat") and s["A2"].source.endswith("rules.md:7")
    assert s["F1"].category == ("Grocery, Beauty & Pet Supplies",)
    shoe = next(x for x in s.values() if x.text.startswith("Shoe size"))
    assert shoe.id.startswith("r-") and shoe.category == ("Clothing > Shoes",) and shoe.tags == ("food", "size", "fit")
    assert s["N1"].text == "A nested numbered rule about colour being secondary."


def test_demo_guideline_has_44_rules(repo):
    s = load_snippets([repo / "demo/guideline.md"])
    assert [x.id for x in s] == [f"R{i:02d}" for i in range(1, 45)]
    by = {x.id: x for x in s}
    assert by["R07"].grade_hint == "4" and by["R08"].grade_hint == "<=3" and by["R06"].grade_hint is None
    assert by["R35"].category == ("Grocery, Beauty & Pet Supplies",) and by["R35"].grade_hint == "2"
    assert by["R16"].tags == ("attributes",)


def test_content_hash_ids_are_stable(tmp_path):
    p = tmp_path / "r.md"
    p.write_text("- first rule\n- second rule\n")
    a = [x.id for x in load_file(p)]
    p.write_text("- first rule\n- second rule, edited\n")
    b = [x.id for x in load_file(p)]
    assert a[0] == b[0] and a[1] != b[1] and all(i.startswith("r-") for i in a + b)


def test_yaml_and_jsonl_sources(tmp_path, repo):
    y = tmp_path / "k.yaml"
    y.write_text("rules:\n  - {id: Y1, text: A rule from YAML, grade: '<= 3', tags: [a, b]}\n  - plain string rule\n"
                 "knowledge:\n  - {text: Knowledge fact, category: [Electronics, Grocery]}\n"
                 "brands:\n  - {name: Zeta Co, makes: kettles, aliases: [Zeta]}\nsynonyms:\n  - [sofa, couch]\n")
    s = load_file(y)
    assert [x.kind for x in s] == ["rule", "rule", "knowledge", "knowledge", "knowledge"]
    assert s[0].grade_hint == "<=3" and s[0].tags == ("a", "b")
    assert s[2].category == ("Electronics", "Grocery")
    assert s[3].id == "brand-zeta-co" and s[3].text == "Zeta Co is a brand of kettles. Also written Zeta." and s[3].tags == ("brand",)
    assert '"sofa" and "couch"' in s[4].text and s[4].tags == ("synonym",)
    lst = tmp_path / "l.yml"
    lst.write_text("- {text: one}\n- {text: two, kind: knowledge}\n")
    assert [x.kind for x in load_file(lst)] == ["rule", "knowledge"]
    j = tmp_path / "r.jsonl"
    j.write_text('{"id": "J1", "text": "json rule", "tags": "x, y", "grade_hint": 1}\n\n{"text": "k", "kind": "knowledge"}\n')
    s = load_file(j)
    assert s[0].tags == ("x", "y") and s[0].grade_hint == "1" and s[1].kind == "knowledge"
    demo = load_file(repo / "demo/knowledge/brands.yaml")
    assert all(x.kind == "knowledge" for x in demo) and any(x.id == "brand-nordvik" for x in demo)


@pytest.mark.parametrize(
    "name, text, expect",
    [
        ("empty.md", "", "no snippets found"),
        ("prose.md", "# Title\n\nOnly prose, no bullets.\n", "no snippets found"),
        ("empty.jsonl", "\n", "no snippets found"),
        ("empty.yaml", "", "no snippets found"),
        ("dup.md", "- [R1] one\n- [R1] two\n", "duplicate snippet id `R1`"),
        ("duptext.md", "- same text\n- same text\n", "the same text twice"),
        ("field.jsonl", '{"text": "t", "catgory": "x"}\n', "unknown field `catgory`"),
        ("kind.jsonl", '{"text": "t", "kind": "fact"}\n', "kind 'fact' is not allowed"),
        ("hint.md", "- [R1] text (grade: very bad)\n", "grade hint"),
        ("attr.md", "- [R1] text {colour: red}\n", "is not understood"),
        ("bad.jsonl", '{"text": \n', "not valid JSON"),
        ("bad.yaml", "rules: [unclosed\n", "invalid YAML"),
        ("section.yaml", "rulez: []\n", "unknown section `rulez`"),
        ("notext.jsonl", '{"id": "x"}\n', "`text` is missing"),
        ("rules.csv", "a,b\n", "unknown snippet file type"),
    ],
)
def test_source_refusals(tmp_path, name, text, expect):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(UserError, match=expect.replace("(", r"\(").replace("[", r"\[")) as e:
        load_snippets([p])
    assert "\n" not in str(e.value)


def test_duplicate_id_across_files(tmp_path):
    (tmp_path / "a.md").write_text("- [R1] one\n")
    (tmp_path / "b.jsonl").write_text('{"id": "R1", "text": "two"}\n')
    with pytest.raises(UserError, match=r"a.md:1 and .*b.jsonl:1"):
        load_snippets([tmp_path / "a.md", tmp_path / "b.jsonl"])
    with pytest.raises(UserError, match="no such file"):
        load_snippets([tmp_path / "missing.md"])
    with pytest.raises(UserError, match="a.md is given twice"):
        load_snippets([tmp_path / "a.md", tmp_path / "b.jsonl", tmp_path / "a.md"])


@pytest.mark.shared_data
def test_google_taxonomy(shared_data):
    s = load_file(shared_data / "google_product_taxonomy/taxonomy-with-ids.en-US.txt")
    assert len(s) == 5595 and len({x.id for x in s}) == 5595
    assert s[0].id == "cat-1" and s[0].text == "Product category: Animals & Pet Supplies" and s[0].kind == "knowledge"
    assert sum(1 for x in s if ">" not in x.text) == 21 and all(x.tags == ("taxonomy",) for x in s)


def test_plain_taxonomy_lines(tmp_path):
    p = tmp_path / "cats.txt"
    p.write_text("# comment\nHome>Kitchen\nHome > Kitchen > Kettles\n")
    s = load_file(p)
    assert [x.text for x in s] == ["Product category: Home > Kitchen", "Product category: Home > Kitchen > Kettles"]


def test_scope_matches():
    assert scope_matches((), "Anything") and scope_matches(("Grocery",), None)
    assert scope_matches(("Clothing, Shoes & Accessories",), "Clothing, Shoes & Accessories > Socks")
    assert scope_matches(("Grocery, Beauty & Pet Supplies",), "Beauty > Hair Care > Shampoo")
    assert scope_matches(("Grocery, Beauty & Pet Supplies",), "pet supplies > Dogs")
    assert not scope_matches(("Grocery, Beauty & Pet Supplies",), "Electronics > Phones")
    assert scope_matches(("Electronics > Phones",), "Electronics > Phones > Cases")
    assert not scope_matches(("Electronics > Phones",), "Electronics > Phonesets")
    assert not scope_matches(("Clothing, Shoes & Accessories",), "Electronics > Phones > Accessories")


# -- build, incremental rebuild ---------------------------------------------------


def test_build_writes_index_folder(tmp_path, rules_md, hash_emb):
    res = _build([rules_md], tmp_path / "idx", hash_emb)
    out = tmp_path / "idx"
    assert {p.name for p in out.iterdir()} == {"snippets.parquet", "embeddings.npy", "index.faiss", "manifest.json", "config.yaml"}
    m = json.loads((out / "manifest.json").read_text())
    assert (m["model_id"], m["dim"], m["metric"], m["count"]) == ("test/hash-embedder", 64, "inner_product", 5)
    assert m["index_spec"]["type"] == "flat" and set(m["snippet_hashes"]) == {"A1", "A2", "F1", "N1"} | {x for x in m["snippet_hashes"] if x.startswith("r-")}
    assert res.counts["embedded"] == 5 and res.counts["reused"] == 0
    df = pl.read_parquet(out / "snippets.parquet")
    assert df.columns == C.SNIPPET_COLUMNS and df[C.SNIPPET_ID].to_list()[0] == "A1"
    v = np.load(out / "embeddings.npy")
    assert v.shape == (5, 64) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)


def test_the_same_guideline_in_another_folder_builds_a_byte_identical_index(tmp_path, rules_md, hash_emb):
    """Found by rerunning the quality benchmark from another checkout: `source` held the absolute path, so the
    snippets file changed and every stage after the index was retrained."""
    moved = tmp_path / "elsewhere/deeper/rules.md"
    moved.parent.mkdir(parents=True)
    moved.write_text(rules_md.read_text())
    _build([rules_md], tmp_path / "a", hash_emb)
    _build([moved], tmp_path / "b", hash_emb)
    a, b = (pl.read_parquet(tmp_path / x / "snippets.parquet") for x in "ab")
    assert a[C.SNIPPET_SOURCE].to_list()[:2] == ["rules.md:6", "rules.md:7"] and a.equals(b)
    for name in ("snippets.parquet", "embeddings.npy", "index.faiss"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # two files of the same name: each keeps the folder that tells it apart, and the summary counts two files
    moved.write_text("- [Z1] A rule of the second team's guideline.\n")
    res = _build([rules_md, moved], tmp_path / "c", hash_emb)
    sources = pl.read_parquet(tmp_path / "c/snippets.parquet")[C.SNIPPET_SOURCE].to_list()
    assert sources[0] == f"{tmp_path.name}/rules.md:6" and sources[-1] == "deeper/rules.md:1"
    assert "from 2 file(s)" in res.headline()


def test_rebuild_reembeds_only_changed_snippets(tmp_path, rules_md, hash_emb):
    out = tmp_path / "idx"
    _build([rules_md], out, hash_emb)
    before = dict(zip(pl.read_parquet(out / "snippets.parquet")[C.SNIPPET_ID], np.load(out / "embeddings.npy")))
    hash_emb.encoded.clear()
    assert _build([rules_md], out, hash_emb).skipped and hash_emb.encoded == []  # nothing changed: skipped

    text = rules_md.read_text().replace("phone case", "phone cover") + "\n- [N2] A brand-new rule.\n"  # edit one, add one
    rules_md.write_text(text.replace("- [A2] A charger that fits the named laptop\n  is Excellent for a charger query. {tags: compat} (grade: 4)\n", ""))  # remove one
    res = _build([rules_md], out, hash_emb)
    assert sorted(hash_emb.encoded) == sorted(["An accessory such as a phone cover for a queried phone is Mismatch.", "A brand-new rule."])
    assert (res.counts["embedded"], res.counts["reused"], res.counts["snippets"]) == (2, 3, 5)
    after = dict(zip(pl.read_parquet(out / "snippets.parquet")[C.SNIPPET_ID], np.load(out / "embeddings.npy")))
    assert "A2" not in after and np.array_equal(after["F1"], before["F1"]) and np.array_equal(after["N1"], before["N1"])

    hash_emb.encoded.clear()
    res = _build([rules_md], out, hash_emb, force=True)
    assert hash_emb.encoded == [] and res.counts["reused"] == 5
    other = HashEmbedder(dim=64, model_id="test/other")  # another model: nothing is reusable
    assert _build([rules_md], out, other).counts["embedded"] == 5


# -- search and filters -----------------------------------------------------------


def test_search_and_filters(tmp_path, rules_md, hash_emb):
    _build([rules_md], tmp_path / "idx", hash_emb)
    idx = RuleIndex.load(tmp_path / "idx", embedder=hash_emb)
    top = idx.search(["phone case accessory"], k=2)[0]
    assert top[0].id == "A1" and top[0].grade_hint == "2" and top[0].score >= top[1].score
    assert [h.id for h in idx.search(["charger laptop"], k=5, tags=["compat"])[0]] == ["A2"]
    assert all(h.kind == "rule" for h in idx.search(["x"], k=5, kind="rule")[0]) and idx.search(["x"], k=5, kind="knowledge") == [[]]
    in_food = {h.id for h in idx.search(["gluten free pasta"], k=5, category="Grocery > Pasta")[0]}
    in_phones = {h.id for h in idx.search(["gluten free pasta"], k=5, category="Electronics > Phones")[0]}
    assert "F1" in in_food and "F1" not in in_phones and len(in_phones) == 3  # F1 and the shoe rule are scoped away
    hyb = idx.search(["gluten free pasta"], k=1, lexical_weight=0.3)[0]
    assert hyb[0].id == "F1"
    assert idx.get("A1")[C.SNIPPET_TEXT].startswith("An accessory")


def test_hybrid_rank_equals_brute_force(tmp_path, hash_emb):
    rules = tmp_path / "r.jsonl"
    words = ["phone", "case", "pasta", "gluten", "shoe", "size", "charger", "laptop", "colour", "brand", "pack", "free"]
    rng = np.random.default_rng(0)
    rules.write_text("".join(json.dumps({"text": " ".join(rng.choice(words, 5))}) + "\n" for _ in range(30)))
    rules.write_text("\n".join(dict.fromkeys(rules.read_text().splitlines())) + "\n")  # distinct texts
    _build([rules], tmp_path / "idx", hash_emb)
    idx = RuleIndex.load(tmp_path / "idx", embedder=hash_emb)
    queries = ["phone case for laptop", "gluten free pasta pack", "zzz unknown"]
    vecs = hash_emb.encode(queries, query=True)
    scores, rows = idx.rank(vecs, 5, None, queries, 0.5)
    lex = idx.lexical.scores(idx.lexical.query_matrix(queries)).toarray()
    brute = vecs @ np.load(tmp_path / "idx/embeddings.npy").T + 0.5 * lex / np.maximum(lex.max(1, keepdims=True), 1e-9)
    for i in range(len(queries)):
        assert np.allclose(scores[i], np.sort(brute[i])[::-1][:5], atol=1e-5)


def test_approximate_indexes_recall(hash_emb):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((100, 32)).astype(np.float32)
    x = centres[rng.integers(0, 100, 5000)] + 0.7 * rng.standard_normal((5000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:200] + 0.05 * rng.standard_normal((200, 32)).astype(np.float32)
    _, truth = search_faiss(build_faiss(x, IndexSpec("flat").resolve(5000)), q, 10)
    for kind in ("ivf", "hnsw"):
        spec = IndexSpec(kind).resolve(5000)
        _, got = search_faiss(build_faiss(x, spec), q, 10, None, spec)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])
        assert recall >= 0.95, (kind, recall)
        allowed = np.zeros(5000, dtype=bool)
        allowed[::2] = True
        _, got = search_faiss(build_faiss(x, spec), q, 10, allowed, spec)
        assert (got[got >= 0] % 2 == 0).all()
    assert IndexSpec("auto").resolve(1000).type == "flat" and IndexSpec("auto").resolve(AUTO_APPROX_MIN).type == "ivf"
    with pytest.raises(UserError, match="--index-type 'annoy'"):
        IndexSpec("annoy")


def test_ivf_index_through_build(tmp_path, hash_emb):
    rules = tmp_path / "many.jsonl"
    rules.write_text("".join(json.dumps({"text": f"rule number {i} about item {i % 37} and pack {i % 11}"}) + "\n" for i in range(800)))
    _build([rules], tmp_path / "idx", hash_emb, index=IndexSpec("ivf"))
    idx = RuleIndex.load(tmp_path / "idx", embedder=hash_emb)
    assert idx.spec.type == "ivf" and idx.spec.nlist > 1 and len(idx.search(["item 5 pack 3"], k=4)[0]) == 4


# -- refusals ----------------------------------------------------------------------


def test_refuses_other_embedder_or_dimension(tmp_path, rules_md, hash_emb):
    _build([rules_md], tmp_path / "idx", hash_emb)
    with pytest.raises(UserError, match="built with embedder test/hash-embedder .*not sentence-transformers/all-mpnet-base-v2"):
        RuleIndex.load(tmp_path / "idx", model="sentence-transformers/all-mpnet-base-v2")
    with pytest.raises(UserError, match="not test/other"):
        RuleIndex.load(tmp_path / "idx", embedder=HashEmbedder(64, "test/other"))
    with pytest.raises(UserError, match="dimension 64 but embedder test/hash-embedder gives 32"):
        RuleIndex.load(tmp_path / "idx", embedder=HashEmbedder(32))
    idx = RuleIndex.load(tmp_path / "idx", embedder=hash_emb)
    with pytest.raises(UserError, match="dimension 16, the index 64"):
        idx.search_vectors(np.zeros((1, 16), np.float32), 3)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete", "edit_snippets"])
def test_refuses_corrupted_index(tmp_path, rules_md, hash_emb, damage):
    out = tmp_path / "idx"
    _build([rules_md], out, hash_emb)
    f = out / "index.faiss"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:100])
    elif damage == "garbage":
        f.write_bytes(b"not a faiss index at all" * 10)
    elif damage == "delete":
        f.unlink()
    else:
        pl.read_parquet(out / "snippets.parquet").head(2).write_parquet(out / "snippets.parquet")
    with pytest.raises(UserError, match="corrupt|missing") as e:
        RuleIndex.load(out, embedder=hash_emb)
    assert "--force" in str(e.value)
    res = _build([rules_md], out, hash_emb)  # a rebuild repairs it
    assert not res.skipped and RuleIndex.load(out, embedder=hash_emb).faiss.ntotal == 5


def test_refuses_unverified_corrupt_faiss(tmp_path, rules_md, hash_emb):
    out = tmp_path / "idx"
    _build([rules_md], out, hash_emb)
    (out / "index.faiss").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="corrupt faiss index"):
        RuleIndex.load(out, embedder=hash_emb, verify=False)
    with pytest.raises(UserError, match="not an index folder"):
        RuleIndex.load(tmp_path)


def test_rules_by_id_need_no_faiss_file(tmp_path, rules_md, hash_emb, monkeypatch):
    """Scoring and training on retrieved pairs only look rules up by id: the faiss file is not read (a GPU machine
    without faiss runs them); the first search reads it, and a damaged one is refused then."""
    from toolkit.model_stage import attach_rules

    out = tmp_path / "idx"
    _build([rules_md], out, hash_emb)
    expected = RuleIndex.load(out, embedder=hash_emb).search(["charger for a laptop"], k=2)
    (out / "index.faiss").write_bytes(b"\x00" * 64)  # unreadable: any read of it fails
    df = pl.DataFrame({C.QUERY: ["laptop charger"], C.TITLE: ["USB-C charger"], C.RULE_IDS: [["A2", "A1"]]})
    texts = [RuleIndex.load(out, verify=False, search=False).get(i)[C.SNIPPET_TEXT] for i in ("A2", "A1")]
    assert texts[0].startswith("A charger that fits")
    (out / "index.faiss").write_bytes(b"")
    monkeypatch.setattr("retrieval_index.index.check_outputs", lambda *a: None)
    assert attach_rules(df, str(out), 3) == [texts]
    lazy = RuleIndex.load(out, verify=False, search=False, embedder=hash_emb)
    with pytest.raises(UserError, match="corrupt faiss index"):
        lazy.search(["charger for a laptop"], k=2)
    _build([rules_md], out, hash_emb, force=True)
    lazy = RuleIndex.load(out, search=False, embedder=hash_emb)
    assert lazy._faiss is None and lazy.search(["charger for a laptop"], k=2) == expected


# -- retrieval for pairs ------------------------------------------------------------


@pytest.fixture
def demo_splits(tmp_path, repo):
    from toolkit.ingest import IngestConfig, ingest
    from toolkit.splits import SplitConfig, split

    ingest(IngestConfig(inputs=[str(repo / "demo/pairs.jsonl")], out=str(tmp_path / "pairs")))
    split(SplitConfig(input=str(tmp_path / "pairs"), out=str(tmp_path / "splits"), fractions="train=0.6,dev=0.2,test=0.2"))
    return tmp_path / "splits"


def test_retrieve_adds_columns_per_split(tmp_path, repo, demo_splits, hash_emb):
    _build([repo / "demo/guideline.md", repo / "demo/knowledge/brands.yaml"], tmp_path / "idx", hash_emb)
    cfg = RetrieveConfig(str(demo_splits), str(tmp_path / "idx"), str(tmp_path / "ret"), k=4, knowledge_k=2)
    res = retrieve(cfg, embedder=hash_emb)
    assert sorted(p.name for p in (tmp_path / "ret").glob("*.parquet")) == ["dev.parquet", "test.parquet", "train.parquet"]
    df = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "ret").glob("*.parquet"))])
    assert df.height == res.counts["pairs"] == 109
    assert df.schema[C.RULE_IDS] == pl.List(pl.String) and df.schema[C.RULE_SCORES] == pl.List(pl.Float32)
    assert (df[C.RULE_IDS].list.len() == 4).all() and (df[C.KNOWLEDGE_IDS].list.len() == 2).all()
    assert all(s == sorted(s, reverse=True) for s in df[C.RULE_SCORES].to_list())
    assert all(i.startswith("R") for row in df[C.RULE_IDS].to_list() for i in row)
    assert all(i.startswith("brand-") or '"' in i or i.startswith("k-") for row in df[C.KNOWLEDGE_IDS].to_list() for i in row)
    for cat, ids in zip(df[C.CATEGORY], df[C.RULE_IDS]):  # R35 is scoped to Grocery, Beauty & Pet Supplies
        if "R35" in ids:
            assert cat.split(" > ")[0] in ("Grocery", "Beauty", "Pet Supplies")
    hash_emb.encoded.clear()
    assert retrieve(cfg, embedder=hash_emb).skipped and not hash_emb.encoded


def test_retrieve_text_modes_embed_distinct_texts_once(tmp_path, repo, demo_splits, hash_emb):
    _build([repo / "demo/guideline.md"], tmp_path / "idx", hash_emb)
    hash_emb.encoded.clear()
    retrieve(RetrieveConfig(str(demo_splits), str(tmp_path / "idx"), str(tmp_path / "q"), text="query", lexical_weight=0), embedder=hash_emb)
    queries = pl.read_parquet(demo_splits / "*.parquet")[C.QUERY]
    assert sorted(hash_emb.encoded) == sorted(queries.unique().to_list())
    with pytest.raises(UserError, match="--text 'title'"):
        RetrieveConfig("a", "b", "c", text="title")


# -- CLI -----------------------------------------------------------------------------


def test_cli_build_search_retrieve(tmp_path, repo, demo_splits, hash_emb, cli, monkeypatch):
    import retrieval_index.embedder as E

    monkeypatch.setattr(E, "load_embedder", lambda spec=None, batch_size=64: hash_emb)
    resolve = E.resolve_model  # the double's id names no hub model: it resolves to itself, without a commit
    monkeypatch.setattr(E, "resolve_model", lambda spec: E.ModelSpec(spec, spec) if spec == hash_emb.model_id else resolve(spec))
    idx = tmp_path / "idx"
    r = cli("build-index", repo / "demo/guideline.md", repo / "demo/knowledge/brands.yaml", "-o", idx, "--model", hash_emb.model_id)
    assert r.exit_code == 0 and "65 snippets (44 rules, 21 knowledge)" in r.output and "embedded 65, reused 0" in r.output
    r = cli("search", "gluten free pasta", "-i", idx, "-k", "3", "--kind", "rule")
    assert r.exit_code == 0 and " R" in r.output and "search: 3 of 65 snippets" in r.output
    r = cli("retrieve", demo_splits, "-i", idx, "-o", tmp_path / "ret", "--show", "2")
    assert r.exit_code == 0 and "retrieve: 109 pairs x top-5 rule snippets" in r.output and r.output.count("(gold grade") == 2
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"index: {idx}\nk: 2\n")
    r = cli("search", "--config", cfg, "phone case")
    assert r.exit_code == 0 and "search: 2 of 65" in r.output


def test_cli_defaults_match_the_library():
    from retrieval_index.retrieve import DEFAULT_LEXICAL_WEIGHT
    from toolkit.cli.index import retrieve as retrieve_cmd

    assert {p.name: p.default for p in retrieve_cmd.params}["lexical_weight"] == DEFAULT_LEXICAL_WEIGHT


def test_cli_refusals_are_one_line(tmp_path, cli, rules_md, hash_emb):
    (tmp_path / "empty.md").write_text("")
    r = cli("build-index", tmp_path / "empty.md", "-o", tmp_path / "idx")
    assert r.exit_code == 2 and r.output.startswith("error: ") and "no snippets found" in r.output and r.output.count("\n") == 1
    r = cli("search", "x", "-i", tmp_path / "nowhere")
    assert r.exit_code == 2 and "no such index folder" in r.output
    _build([rules_md], tmp_path / "idx", hash_emb)
    r = cli("search", "x", "-i", tmp_path / "idx", "--model", "sentence-transformers/all-mpnet-base-v2")
    assert r.exit_code == 2 and "built with embedder test/hash-embedder" in r.output
    (tmp_path / "idx/index.faiss").write_bytes(b"broken")
    r = cli("retrieve", tmp_path, "-i", tmp_path / "idx", "-o", tmp_path / "ret")
    assert r.exit_code == 2 and "error: " in r.output


# -- the real default model -------------------------------------------------------------


@pytest.mark.slow
def test_demo_index_with_minilm(tmp_path, repo, demo_splits, minilm, cli):
    idx = tmp_path / "idx"
    r = cli("build-index", repo / "demo/guideline.md", repo / "demo/knowledge/brands.yaml", "-o", idx)
    assert r.exit_code == 0 and "dim 384" in r.output
    assert json.loads((idx / "manifest.json").read_text())["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    r = cli("search", "alternative to nordvik brewmaster 300", "-i", idx, "--kind", "rule", "-k", "3")
    assert r.exit_code == 0 and ("R28" in r.output or "R29" in r.output)
    r = cli("retrieve", demo_splits, "-i", idx, "-o", tmp_path / "ret", "--show", "1")
    assert r.exit_code == 0 and "109 pairs" in r.output

    # retrieval quality on the labelled set stays near the benchmark figure (recall@10 about 0.66)
    from retrieval_index.retrieve import retrieve_for_pairs

    qrels = [json.loads(x) for x in (repo / "demo/retrieval_qrels.jsonl").read_text().splitlines()]
    cats = {(p["query"], p["title"]): p["category"] for p in map(json.loads, (repo / "demo/pairs.jsonl").read_text().splitlines())}
    ids, _ = retrieve_for_pairs(RuleIndex.load(idx), [q["query"] for q in qrels], [q["title"] for q in qrels],
                                [cats[(q["query"], q["title"])] for q in qrels], k=10)
    recall = np.mean([len(set(q["relevant_rules"]) & set(i)) / len(q["relevant_rules"]) for q, i in zip(qrels, ids)])
    assert recall >= 0.55


@pytest.mark.slow
def test_incremental_rebuild_with_minilm(tmp_path, repo, minilm, cli):
    md = tmp_path / "guideline.md"
    shutil.copy(repo / "demo/guideline.md", md)
    assert cli("build-index", md, "-o", tmp_path / "idx").exit_code == 0
    md.write_text(md.read_text().replace("is Irrelevant. (grade: 1)", "is Irrelevant, whatever its price. (grade: 1)", 1))
    r = cli("build-index", md, "-o", tmp_path / "idx")
    assert r.exit_code == 0 and "embedded 1, reused 43" in r.output
