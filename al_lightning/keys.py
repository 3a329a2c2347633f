"""Batch and info keys (one place, as constants). Shapes: G graphs, N atoms in a batch.

Batches are mace ``AtomicData`` batches; the extra keys below are attached by
:mod:`al_lightning.data.graphs`.
"""

# ---- mace batch keys (produced by mace.data.AtomicData) ----
POSITIONS = "positions"  # (N, 3) float, Å
NODE_ATTRS = "node_attrs"  # (N, n_elements) one-hot
BATCH = "batch"  # (N,) long, graph index of each atom
PTR = "ptr"  # (G + 1,) long, atom offsets
ENERGY = "energy"  # (G,) float, eV (reference label)
FORCES = "forces"  # (N, 3) float, eV/Å (reference label)
ENERGY_WEIGHT = "energy_weight"  # (G,) float, 0 when the label is absent
FORCES_WEIGHT = "forces_weight"  # (G,) float, 0 when the label is absent
HEAD = "head"  # (G,) long, index of the head in model.heads (0 for a single-head model)

# ---- al_lightning extras ----
STRUCTURE_ID = "structure_id"  # (G,) long, stable global id within its split (pool: file order)
FREE_MASK = "free_mask"  # (N,) bool, False for atoms fixed by FixAtoms (forces not scored)
NUM_ATOMS = "num_atoms"  # (G,) long

# ---- ASE info / arrays keys used on disk (mace's own convention) ----
REF_ENERGY = "REF_energy"  # atoms.info
REF_FORCES = "REF_forces"  # atoms.arrays
SOURCE = "source"  # atoms.info: "relax" | "md" | "rattle"
ADSORBATE = "adsorbate"  # atoms.info: adsorbate formula
CATALYST = "catalyst"  # atoms.info: e.g. "Pt(111)" or "CuPt(111)"
SYSTEM_ID = "system_id"  # atoms.info: index of the slab+adsorbate system within its split
CHARGE = "charge"  # atoms.info: total charge (e); passed to calculators that take one
MULTIPLICITY = "multiplicity"  # atoms.info: spin multiplicity 2S+1 (radicals: 2)
REPLAY_WEIGHT = "replay_weight"  # atoms.info: loss weight of a foundation-replay frame (campaign labels: 1)

# ---- model outputs ----
OUT_ENERGY = "energy"  # (G,)
OUT_FORCES = "forces"  # (N, 3)
