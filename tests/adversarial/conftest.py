"""Fixtures of the adversarial pass; its helpers live in adversary.py (a name of its own:
`from conftest import` would find whichever conftest module pytest loaded first)."""
from adversary import done, ops, rng  # noqa: F401  (fixtures)
from adversary6 import big, tiny  # noqa: F401  (fixtures of the sixth pass: the model cache)
from adversary7 import packed2  # noqa: F401  (the seventh pass: packed weights kept)
