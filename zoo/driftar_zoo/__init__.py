"""driftar's pretrained models: one directory per ``arch.tag`` name under ``models/`` (card.json,
config.json, model.safetensors, README.md), registered through the ``driftar_register_models`` hook."""
