"""The fake model's fixtures (tests/fake_model.py) for the training tests."""
from fake_model import fake_bundle, fake_factory, fake_plugin, make_config  # noqa: F401 (fixtures)
