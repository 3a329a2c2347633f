"""Oracles label what was picked: stored labels (benchmarks), any ASE calculator, or a file
hand-off to a cluster; your own by subclassing :class:`Oracle`."""

from al_lightning.oracle.handoff import FileHandoffOracle, HandoffPending
from al_lightning.oracle.factory import make_oracle, oracle_spec
from al_lightning.oracle.oracles import CalculatorOracle, Oracle, OracleError, StoredLabelOracle

__all__ = ["Oracle", "OracleError", "StoredLabelOracle", "CalculatorOracle", "FileHandoffOracle", "HandoffPending",
           "make_oracle", "oracle_spec"]
