"""Oracles label what was picked: stored labels (benchmarks) or any ASE calculator."""

from al_lightning.oracle.oracles import (CalculatorOracle, Oracle, OracleError, StoredLabelOracle, make_oracle,
                                        oracle_spec)

__all__ = ["Oracle", "OracleError", "StoredLabelOracle", "CalculatorOracle", "make_oracle", "oracle_spec"]
