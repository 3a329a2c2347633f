"""The fault-injection hook (below every subpackage: no upward imports).

``hit(phase)`` is a one-line call at the points a crash-resume test may stop a campaign (``fit``,
``test``, ``pool_batch``, ``pool``, ``label``, ``db``, ``write``). It does nothing unless ``AL_FAULT_PLUGIN`` names
a module with a ``hit(phase)`` function (the test suite's injector, tests/support/al_fault_plugin.py,
driven by ``AL_FAULT=<phase>:<n>[:<SIGNAL>]``); the module is imported once, on the first call.
"""

from __future__ import annotations

import importlib
import os

PHASES = ("fit", "test", "pool_batch", "pool", "label", "db", "write")
_plugin = None  # the plugin's hit, False when none is named


def hit(phase: str) -> None:
    """Report that the campaign reached ``phase`` to the fault plugin, if one is named."""
    global _plugin
    if _plugin is None:
        name = os.environ.get("AL_FAULT_PLUGIN")
        _plugin = importlib.import_module(name).hit if name else False
    if _plugin:
        _plugin(phase)
