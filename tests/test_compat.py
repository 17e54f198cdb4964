"""A plugin written against an earlier layout keeps importing: moved paths warn and forward."""

from __future__ import annotations

import importlib
import sys

import pytest

from plm_bench.compat import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_module_imports_from_its_old_path_with_a_warning_naming_the_new_one(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED[old]}"):
        module = importlib.import_module(old)
    new = importlib.import_module(MOVED[old])
    public = [n for n in vars(new) if not n.startswith("_")]
    assert public and all(getattr(module, n) is getattr(new, n) for n in public)


def test_the_old_specs_path_of_the_bug_report_works_as_written():
    sys.modules.pop("plm_bench.specs", None)
    with pytest.warns(DeprecationWarning):
        from plm_bench.specs import BackboneSpec
    from plm_bench import BackboneSpec as published

    assert BackboneSpec is published


def test_an_unknown_path_still_fails_as_python_does():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("plm_bench.never_existed")
