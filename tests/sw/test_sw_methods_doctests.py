"""The examples in the docstrings of SPViT, AS-ViT, SaiT and the budget losses run and give what they show."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["methods.spvit", "methods.asvit", "methods.sait", "losses_budget"])
def test_docstring_examples(name):
    module = importlib.import_module(f"tokensift.sw.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
