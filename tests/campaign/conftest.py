"""Campaign-test helpers: the smoke data of a campaign folder, metrics of an exported model."""

from pathlib import Path

import numpy as np
import pytest


def campaign_datamodule(campaign_dir, **kwargs):
    """The ActiveDataModule of a campaign's ``config.yaml`` (its embedded EMT data)."""
    import yaml

    from al_lightning.data.datamodule import ActiveDataModule
    from al_lightning.data.synthetic import EMTCatalysisSpec

    data = yaml.safe_load((Path(campaign_dir) / "config.yaml").read_text())["data"]
    return ActiveDataModule(emt=EMTCatalysisSpec(**data["emt"]), **kwargs)


def _calculator_metrics(model_path, campaign_dir, splits):
    """``{"<split>/energy_mae", "<split>/forces_mae"}`` of a ``.model`` file through mace's
    ``MACECalculator`` (CPU, float64): energy per atom, force components of free atoms."""
    from mace.calculators import MACECalculator

    from al_lightning import keys as K
    from al_lightning.data.io import free_mask

    dm = campaign_datamodule(campaign_dir)
    calc = MACECalculator(model_paths=str(model_path), device="cpu", default_dtype="float64")
    out = {}
    for split in splits:
        f = dm.structure_file(split)
        de, df = [], []
        for i in range(len(f)):
            ref = f[i]
            atoms = ref.copy()
            atoms.calc = calc
            de.append(abs(atoms.get_potential_energy() - ref.info[K.REF_ENERGY]) / len(ref))
            mask = free_mask(ref)
            df.append(np.abs(atoms.get_forces(apply_constraint=False)[mask] - ref.arrays[K.REF_FORCES][mask]).ravel())
        out[f"{split}/energy_mae"] = float(np.mean(de))
        out[f"{split}/forces_mae"] = float(np.concatenate(df).mean())
    return out


@pytest.fixture
def calculator_metrics():
    return _calculator_metrics


@pytest.fixture(name="campaign_datamodule")
def _campaign_datamodule_fixture():
    return campaign_datamodule
