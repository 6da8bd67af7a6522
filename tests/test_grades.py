"""Grade scales and label mappings. Run: .venv/bin/python -m pytest tests/test_grades.py -q"""

import pytest

from toolkit.core.errors import UserError
from toolkit.core.grades import SCALES, GradeMapper, GradeScale, builtin_mapper, get_scale, parse_grade_map


def test_default_scale_is_taosr4():
    s = get_scale()
    assert s.name == "taosr4"
    assert s.values == [4, 3, 2, 1]
    assert s.names == ["Excellent", "Related", "Mismatch", "Irrelevant"]
    assert s.labels == ["4", "3", "2", "1"]


@pytest.mark.parametrize("name,n", [("three", 3), ("five", 5), ("binary", 2), ("esci", 4)])
def test_builtin_scales_sizes(name, n):
    s = SCALES[name]
    assert len(s) == n and s.values == list(range(n, 0, -1))


def test_custom_scale_from_yaml(tmp_path):
    p = tmp_path / "scale.yaml"
    p.write_text("name: mine\ngrades:\n- {value: 2, name: Good, label: G}\n- {value: 1, name: Bad, label: B}\n")
    s = get_scale(str(p))
    assert s.name == "mine" and s.labels == ["G", "B"] and s.by_label("B").value == 1


@pytest.mark.parametrize(
    "grades,msg",
    [
        ([{"value": 2, "label": "x"}, {"value": 1, "label": "x"}], "repeats label"),
        ([{"value": 1}, {"value": 2}], "best first"),
        ([{"value": 1}], "at least 2"),
        ([{"value": 2, "label": "a b"}, {"value": 1}], "no whitespace"),
    ],
)
def test_bad_scales_are_refused(grades, msg):
    with pytest.raises(UserError, match=msg):
        GradeScale.from_dict({"name": "bad", "grades": grades})


def test_esci_map():
    m = builtin_mapper("esci", get_scale())
    assert [m.map(x) for x in "ESCI"] == [4, 3, 2, 1]
    assert m.map(" e ") == 4 and m.map("X") is None


def test_wands_three_level_map():
    m = builtin_mapper("wands", get_scale("three"))
    assert (m.map("Exact"), m.map("Partial"), m.map("Irrelevant")) == (3, 2, 1)


@pytest.mark.parametrize("mean,grade", [(3.0, 4), (2.67, 3), (2.5, 3), (2.33, 2), (2.0, 2), (1.67, 1), (1.0, 1)])
def test_homedepot_thresholds(mean, grade):
    assert builtin_mapper("homedepot", get_scale()).map(str(mean)) == grade


def test_thresholds_must_fit_scale():
    with pytest.raises(UserError, match="needs 3 numbers"):
        GradeMapper(get_scale(), thresholds=(3.0, 2.0))
    with pytest.raises(UserError, match="decreasing"):
        GradeMapper(get_scale(), thresholds=(2.0, 2.5, 3.0))


def test_grade_map_text_and_numeric_normalisation():
    s = get_scale()
    table = parse_grade_map("E=4, S=3; C=2,I=1", s)
    assert table == {"e": 4, "s": 3, "c": 2, "i": 1}
    assert GradeMapper(s, table=parse_grade_map("4.0=4,1=1", s)).map("4") == 4
    with pytest.raises(UserError, match="not on scale"):
        GradeMapper(s, table={"a": 7})
    with pytest.raises(UserError, match="no `=`"):
        parse_grade_map("E4", s)


def test_identity_accepts_values_and_labels():
    s = GradeScale.from_dict({"name": "ab", "grades": [{"value": 2, "label": "A"}, {"value": 1, "label": "B"}]})
    m = GradeMapper(s)
    assert m.map("2") == 2 and m.map("2.0") == 2 and m.map("B") == 1 and m.map("3") is None
