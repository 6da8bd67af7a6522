"""Thin wrappers over TRL's SFT, DPO and GRPO trainers, reward functions, and a cross-encoder baseline."""
