"""The examples in the sw docstrings run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["budget", "data", "flops", "registry", "selection", "vit"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"tokensift.sw.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
