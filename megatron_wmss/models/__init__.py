"""Model construction (HF config -> megatron GPTModel) and the weak/strong pair."""
