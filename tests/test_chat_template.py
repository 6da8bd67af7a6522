"""Chat-template options (issue 18): a template that opens a <think> block after the generation prompt
(Qwen3 / R1-style) must not silently break first-token scoring and label-first training.

The model is the tiny random Llama with SmolLM2's tokenizer and a reasoning-style template written here:
it opens `<think>` after the assistant header unless `enable_thinking` is false, when it writes an empty,
closed block (as Qwen3's does).
"""

from __future__ import annotations

import shutil

import pytest

from toolkit.core.chat_template import check_generation_prompt, parse_options, template_options
from toolkit.core.errors import UserError

THINK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}{% endif %}"
)
MESSAGES = [{"role": "system", "content": "Grade relevance 1-4, grade first."}, {"role": "user", "content": "Query: shoes\nItem: running shoe"}]


@pytest.fixture(scope="module")
def think_model_dir(tiny_model_dir, tmp_path_factory):
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("think-model")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = THINK_TEMPLATE
    tok.save_pretrained(out)
    return out


def test_options_parse_and_thinking_is_switched_off_only_where_the_template_has_the_switch():
    assert parse_options(["enable_thinking=false", "depth=3", "name=x"]) == {"enable_thinking": False, "depth": 3, "name": "x"}
    with pytest.raises(UserError, match="give KEY=VALUE"):
        parse_options(["enable_thinking"])
    assert template_options(THINK_TEMPLATE, {}) == {"enable_thinking": False}
    assert template_options(THINK_TEMPLATE, {"enable_thinking": True}) == {"enable_thinking": True}  # the user's choice stands
    assert template_options("{{ messages }}", {}) == {}
    check_generation_prompt("<|im_start|>assistant\n<think>\n\n</think>\n\n", "m", {})  # closed: fine
    with pytest.raises(UserError, match="opens a <think> block.*enable_thinking=false"):
        check_generation_prompt("<|im_start|>assistant\n<think>\n", "m", {})


def test_a_think_template_is_scored_on_the_closed_block_and_refused_when_left_open(think_model_dir):
    import torch

    from toolkit.generation.base import BackendConfig
    from toolkit.generation.hf import TransformersBackend
    from toolkit.core.models import grade_token_ids

    labels = ["4", "3", "2", "1"]
    backend = TransformersBackend(BackendConfig(model=str(think_model_dir), dtype="float32"))
    text = backend.render(MESSAGES)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # the label follows the closed block
    probs = backend.score_grades([MESSAGES], labels)[0]
    # the same numbers by hand: the next-token distribution after exactly that text, over the label tokens
    enc = backend.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        logits = backend.model(**enc).logits[0, -1]
    want = torch.softmax(logits[grade_token_ids(backend.tokenizer, labels)].float(), -1).tolist()
    assert probs == pytest.approx(want, abs=1e-5)
    backend.close()
    opened = TransformersBackend(BackendConfig(model=str(think_model_dir), dtype="float32", template_options=["enable_thinking=true"]))
    with pytest.raises(UserError, match="opens a <think> block"):
        opened.score_grades([MESSAGES], labels)


def test_trainers_train_on_the_closed_block_and_refuse_an_open_one(think_model_dir):
    from transformers import AutoTokenizer

    from trainers.config import SFTTrainConfig
    from trainers.data import to_dataset, with_template
    from trainers.run import chat_template_options

    tok = AutoTokenizer.from_pretrained(think_model_dir)
    cfg = SFTTrainConfig(data="x", out="y")
    opts = chat_template_options(tok, cfg, "think")
    assert opts == {"enable_thinking": False}
    ds = with_template(to_dataset([{"prompt": MESSAGES, "completion": [{"role": "assistant", "content": "4"}]}]), opts)
    assert ds[0]["chat_template_kwargs"] == {"enable_thinking": False}  # what TRL's SFT and DPO trainers render with
    with pytest.raises(UserError, match="opens a <think> block"):
        chat_template_options(tok, SFTTrainConfig(data="x", out="y", template_options={"enable_thinking": True}), "think")
