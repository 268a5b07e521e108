"""The small MAR config shared by the MAR tests (importable by name: pytest puts tests/mar on sys.path)."""

# Smaller than mar_tiny so every test runs in well under a second on CPU; same code paths.
SMALL = dict(
    encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2,
    decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2,
    buffer_size=2, diffloss=dict(depth=2, width=32, num_sampling_steps=10),
    sampling=dict(num_iter=4, cfg=1.0),
)
