"""GRPO reward functions and train-config validation (no models; about 5 s, most of it importing TRL).

Run: .venv/bin/python -m pytest tests/test_rewards.py -q
"""

from __future__ import annotations

import pytest

from toolkit.core.errors import UserError
from toolkit.core.grades import get_scale
from toolkit.core.parsing import COT_FIRST
from trainers.rewards import completion_text, make_rewards

SCALE = get_scale("taosr4")


def _msg(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_grade_match_is_the_papers_reward():
    (reward,) = make_rewards(["grade_match"], SCALE)
    completions = [_msg("4\nReason: same product"), _msg("3\nReason: close"), _msg("I think it is good"), "1"]
    assert reward(completions=completions, gold_label=["4", "4", "4", "1"]) == [1.0, 0.0, 0.0, 1.0]
    assert reward.__name__ == "grade_match"  # TRL logs rewards/<name>/mean


def test_format_rewards_parseable_answers_only():
    (reward,) = make_rewards(["format"], SCALE)
    completions = [_msg("2\nReason: an accessory"), _msg("Grade 4/5"), _msg(""), _msg("3 or 4")]
    assert reward(completions=completions, gold_label=["1"] * 4) == [1.0, 0.0, 0.0, 0.0]


def test_distance_gives_partial_credit_by_scale_position():
    (reward,) = make_rewards(["distance"], SCALE)
    completions = [_msg(x) for x in ("4", "3", "2", "1", "nonsense")]
    assert reward(completions=completions, gold_label=["4"] * 5) == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0, 0.0])


def test_rewards_parse_the_configured_order_and_scale():
    esci = get_scale("binary")
    (reward,) = make_rewards(["grade_match"], esci, COT_FIRST)
    assert reward(completions=[_msg("Both name a lamp.\nGrade: 2"), _msg("2\nReason: x")], gold_label=["2", "2"]) == [1.0, 0.0]


def test_completion_text_accepts_strings_and_messages():
    assert completion_text("4") == "4"
    assert completion_text([{"role": "assistant", "content": "4\nReason"}]) == "4\nReason"
    assert completion_text(None) == ""


# -- configs -------------------------------------------------------------------------------


def test_unknown_trl_field_names_close_matches():
    pytest.importorskip("trl")
    from trainers.config import SFTTrainConfig

    cfg = SFTTrainConfig(data="d", out="o", trl={"lerning_rate": 1e-5})
    with pytest.raises(UserError) as e:
        cfg.trl_fields()
    msg = str(e.value)
    assert "lerning_rate" in msg and "learning_rate" in msg and "\n" not in msg


def test_owned_and_invalid_fields_are_one_line_errors():
    pytest.importorskip("trl")
    from trainers.config import DPOTrainConfig, GRPOTrainConfig

    with pytest.raises(UserError, match="output_dir"):
        DPOTrainConfig(data="d", out="o", trl={"output_dir": "x"}).trl_fields()
    with pytest.raises(UserError, match="unknown reward"):
        GRPOTrainConfig(data="d", out="o", rewards=["exact"])
    with pytest.raises(UserError, match="reward_weights"):
        GRPOTrainConfig(data="d", out="o", rewards=["grade_match", "format"], trl={"reward_weights": [1.0]})
    with pytest.raises(UserError, match="nll_weight"):
        DPOTrainConfig(data="d", out="o", nll_weight=0.5, trl={"loss_type": ["ipo"]})


def test_defaults_layering_and_nll_term():
    pytest.importorskip("trl")
    from trainers.config import DPOTrainConfig, GRPOTrainConfig

    fields = DPOTrainConfig(data="d", out="o", nll_weight=0.2, trl={"beta": 0.3}).trl_fields({"use_cpu": True, "bf16": False})
    assert fields["loss_type"] == ["sigmoid", "sft"] and fields["loss_weights"] == [1.0, 0.2]
    assert fields["beta"] == 0.3 and fields["use_cpu"] is True and fields["logging_steps"] == 1
    grpo = GRPOTrainConfig(data="d", out="o", use_vllm=True).trl_fields()
    assert (grpo["temperature"], grpo["beta"], grpo["epsilon"]) == (0.99, 0.02, 0.2)
    assert grpo["use_vllm"] is True and grpo["vllm_mode"] == "colocate"


def test_example_configs_are_valid(repo):
    """Every shipped train YAML names real options and real TRL / training-argument fields."""
    pytest.importorskip("trl")
    pytest.importorskip("sentence_transformers")
    import yaml

    from trainers.config import BaselineConfig, DPOTrainConfig, GRPOTrainConfig, SFTTrainConfig

    classes = {"sft": SFTTrainConfig, "dpo": DPOTrainConfig, "grpo": GRPOTrainConfig, "baseline": BaselineConfig}
    for name, cls in classes.items():
        data = yaml.safe_load((repo / "trainers" / "configs" / f"{name}.yaml").read_text())
        cls(**data).trl_fields()
    for name in ("accelerate_multi_gpu", "deepspeed_zero2", "deepspeed_zero3"):
        data = yaml.safe_load((repo / "trainers" / "configs" / f"{name}.yaml").read_text())
        assert data["distributed_type"] in ("MULTI_GPU", "DEEPSPEED")


def test_consistency_rewards_a_decision_that_names_the_emitted_grade():
    (fn,) = make_rewards(["consistency"], SCALE)
    answers = [
        "3\nReason: 1. Query understanding: shoes.\n5. Decision: the item is Related but not an exact match.",  # names 3: consistent
        "3\nReason: 1. Query understanding: shoes.\n5. Decision: an Excellent match.",  # reasons for 4, emits 3
        "2\nReason: the brand differs; grade: 2 fits.",  # no Decision step: the last line, `grade: 2`
        "4\nReason: 5. Decision: fits the query well.",  # names no grade: neutral
        "nothing parseable",
        "1\nReason: 5. Decision: Irrelevant, though some would say Mismatch.",  # names two grades
    ]
    assert fn(completions=answers, gold_label=["3"] * 6) == [1.0, 0.0, 1.0, 0.5, 0.0, 0.0]
    # conversational completions, and the reward ignores the gold grade (grade_match covers it)
    assert fn(completions=[[{"role": "assistant", "content": answers[0]}]], gold_label=["1"]) == [1.0]
