"""The campaign's side of an acquisition (rank 0): what the :class:`AcquisitionCallback` asks the
campaign for — a stored selection of a resumed round, persisting a new one, and labeling it with
the configured oracle through the never-lose-a-label store (:mod:`labeling`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from al_lightning.campaign import outputs
from al_lightning.campaign.labeling import LabelStore, label_round, predicted_max_forces, sanity_problem
from al_lightning.oracle import HandoffPending, make_oracle, oracle_spec


class CampaignLabeler:
    """Selections in ``store`` (labels/round_rrr/selected.json), labels from ``cfg.oracle``."""

    def __init__(self, cfg, module, datamodule, store: LabelStore, directory: Path) -> None:
        self.cfg, self.module, self.dm, self.store, self.dir = cfg, module, datamodule, store, directory

    def stored_selection(self, round_: int) -> Optional[List[int]]:
        """A resumed round keeps its selection (read on every rank: the file is shared)."""
        return self.store.load_selection(round_)

    def save_selection(self, round_: int, ids: List[int], diagnostics: Dict[str, Any]) -> None:
        self.store.save_selection(round_, ids)
        outputs.log_diagnostics(self.dir / "tb" / "rounds", round_, diagnostics)

    def label(self, round_: int, ids: List[int]):
        """(ids labelled, labels, failures) — or the :class:`HandoffPending` to raise on every rank."""
        pool = self.dm.pool_dataset()
        structures = [pool.get_atoms(int(i))[1] for i in ids]
        oracle = self.oracle(round_)
        try:
            return label_round(self.store, round_, ids, structures, oracle, self.oracle_name, self._sanity(ids))
        except HandoffPending as exc:
            return exc
        finally:
            oracle.close()  # a timeout worker process ends with the round

    @property
    def oracle_name(self) -> str:
        return oracle_spec(self.cfg.oracle, self.cfg.oracle_kwargs)[0]

    def oracle(self, round_: int):
        """The round's oracle (built before anything is written, so a bad calculator fails early)."""
        return make_oracle(self.cfg.oracle, self.cfg.oracle_kwargs, self.dm, timeout_s=self.cfg.oracle_timeout,
                           handoff=(self.dir, round_, self.cfg.handoff_energy_key, self.cfg.handoff_forces_key))

    def _sanity(self, ids: List[int]):
        predicted = predicted_max_forces(self.module, self.dm, ids) if self.cfg.sanity_max_force else {}
        return lambda i, atoms: sanity_problem(atoms, self.cfg.sanity_min_distance, self.cfg.sanity_max_force,
                                               predicted.get(i))
