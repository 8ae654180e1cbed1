"""Shared benchmark settings: the ~80M-parameter V5.1-shaped transformer config the issues measure."""

# 8 MMDiT layers, 8 heads x 64, time_embed_dim 512, text dim 3584; 1x16x13x32x32 latents give
# 13 x 16 x 16 = 3328 video tokens, plus 256 text tokens.
CONFIG_80M = dict(
    num_attention_heads=8,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    patch_size=2,
    num_layers=8,
    mmdit_layers=8,
    time_embed_dim=512,
    text_embed_dim=3584,
    add_norm_text_encoder=True,
)
LATENT_SHAPE = (1, 16, 13, 32, 32)
TEXT_LEN = 256
# This CPU's matmul figures from the project brief (GFLOP/s).
NOMINAL_PEAK_GFLOPS = {"fp32": 150.0, "bf16": 350.0}
