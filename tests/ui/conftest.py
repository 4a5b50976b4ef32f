"""Fixtures of the UI tests."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

import pytest


def import_chainlit(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The chainlit package, imported so that the folders it creates (.chainlit/, .files/) go to a
    temporary directory instead of the current one."""
    if "chainlit" not in sys.modules:
        previous = os.environ.get("CHAINLIT_APP_ROOT")
        os.environ["CHAINLIT_APP_ROOT"] = str(tmp_path_factory.mktemp("chainlit-root"))
        try:
            importlib.import_module("chainlit")
        finally:
            if previous is None:
                del os.environ["CHAINLIT_APP_ROOT"]
            else:
                os.environ["CHAINLIT_APP_ROOT"] = previous
    return importlib.import_module("chainlit")
