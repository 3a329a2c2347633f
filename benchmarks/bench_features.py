"""Benchmark the NTK feature passes against a plain energy+forces pass (docs/design.md §10).

Prints JSON: per-structure seconds and ratios to one energy+forces pass of the same model
and batch, measured in one run (rounds interleaved, medians), plus the peak RSS increase
per stage (CPU: sampled RSS after malloc_trim, coarse; CUDA: max_memory_allocated), for a tiny and a medium-like MACE on ~80-atom fcc(111) slabs with adsorbates.
Exact force rows (3N backwards) only on the tiny model.

Targets: NTK-E ≤ 1.2×, NTK-EF (direction) ≤ 3.5×, k probes ≤ (1.5 + 2k)×; and for each
parameter preset (readouts, readouts+products, interactions, all_linear) tensor-sketched to
1024: NTK-E, NTK-EF (direction; target ≤ 3.5×) and 16 probes (the training side).

    OMP_NUM_THREADS=1 python benchmarks/bench_features.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import threading
import time
from typing import Callable, Dict, List

import numpy as np
import torch

import al_lightning  # noqa: F401  (mace before e3nn.o3)
from al_lightning.features import compute_features, resolve_params

ZS = [1, 6, 8, 29, 78]
MODELS = {
    "tiny": dict(hidden="8x0e+8x1o", max_ell=2, correlation=2, r_max=4.0, mlp="16x0e", radial=[16, 16]),
    "medium_like": dict(hidden="64x0e+64x1o", max_ell=2, correlation=3, r_max=5.0, mlp="16x0e",
                        radial=[64, 64, 64]),
    # MACE-MP-0 medium's architecture (its training log: 128 channels, max_L 1, r_max 6, 10 Bessel
    # functions, max_ell 3, correlation 3, 2 residual interactions, 89 elements): random weights
    "mp0_medium": dict(hidden="128x0e+128x1o", max_ell=3, correlation=3, r_max=6.0, mlp="16x0e",
                       radial=[64, 64, 64], num_bessel=10, zs=list(range(1, 90))),
}


def build_model(hidden: str, max_ell: int, correlation: int, r_max: float, mlp: str, radial: List[int],
                seed: int = 0, num_bessel: int = 8, zs: List[int] = ZS) -> torch.nn.Module:
    """A randomly initialised ScaleShiftMACE with 2 interactions and an MLP last readout (mace's constructor)."""
    from e3nn import o3
    from mace import modules

    torch.manual_seed(seed)
    inter = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=r_max, num_bessel=num_bessel, num_polynomial_cutoff=5, max_ell=max_ell, interaction_cls=inter,
        interaction_cls_first=inter, num_interactions=2, num_elements=len(zs),
        hidden_irreps=o3.Irreps(hidden), MLP_irreps=o3.Irreps(mlp),
        atomic_energies=np.zeros(len(zs)), avg_num_neighbors=40.0, atomic_numbers=zs,
        correlation=correlation, gate=torch.nn.functional.silu, radial_MLP=radial,
        atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    ).eval()


def slabs(n: int, seed: int = 0) -> list:
    """n rattled ~80-atom fcc(111) slabs (4×4×5) of Cu/Pt with an O, CO or OH adsorbate."""
    from ase.build import add_adsorbate, fcc111, molecule

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = fcc111("Cu" if i % 2 == 0 else "Pt", size=(4, 4, 5), vacuum=6.0)
        ads = ["O", "CO", "OH"][i % 3]
        add_adsorbate(s, molecule(ads) if len(ads) > 1 else ads, 1.8, "fcc")
        s.positions += rng.normal(scale=0.05, size=s.positions.shape)
        out.append(s)
    return out


def make_batch(atoms_list: list, r_max: float, device: str, zs: List[int] = ZS) -> Dict[str, torch.Tensor]:
    from mace import data as mdata
    from mace.tools import AtomicNumberTable
    from mace.tools.torch_geometric.batch import Batch

    table = AtomicNumberTable(zs)
    ds = [mdata.AtomicData.from_config(mdata.config_from_atoms(a), z_table=table, cutoff=r_max)
          for a in atoms_list]
    return {k: v.to(device) for k, v in Batch.from_data_list(ds).to_dict().items()}


def _trim() -> None:
    """Give freed heap pages back to the OS (glibc) so RSS tracks live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


class PeakRSS:
    """Samples the process RSS every 1 ms; ``peak_mb`` = max increase over the start
    (after ``malloc_trim``). On CUDA, ``torch.cuda.max_memory_allocated`` increase instead."""

    def __init__(self, device: str = "cpu") -> None:
        import psutil

        self.proc, self.peak, self._stop, self.device = psutil.Process(), 0, threading.Event(), device

    def __enter__(self) -> "PeakRSS":
        _trim()
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self.cuda_base = torch.cuda.memory_allocated()
        self.base = self.peak = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()
        if self.device.startswith("cuda"):
            self.peak = self.base + torch.cuda.max_memory_allocated() - self.cuda_base

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.base) / 2**20


SKETCH_PRESETS = ("readouts", "readouts+products", "interactions", "all_linear")
SKETCH_DIM = 1024


def stages(model: torch.nn.Module, batch: dict, with_exact: bool) -> Dict[str, Callable[[], object]]:
    from al_lightning.features import TensorSketch

    sub = resolve_params(model, "readouts")
    st = {
        "energy_forces": lambda: model(dict(batch), compute_force=True),
        "ntk_e": lambda: compute_features(model, batch, sub),
        "ntk_ef_direction": lambda: compute_features(model, batch, sub, force_mode="direction"),
    }
    for k in (1, 4, 16):
        st[f"ntk_ef_probes_k{k}"] = lambda k=k: compute_features(model, batch, sub, force_mode="probes", n_probes=k)
    if with_exact:
        st["ntk_ef_exact"] = lambda: compute_features(model, batch, sub, force_mode="exact")
    for preset in SKETCH_PRESETS:  # each parameter subset tensor-sketched to SKETCH_DIM
        ps, sk = resolve_params(model, preset), TensorSketch(SKETCH_DIM, seed=0)
        st[f"{preset}+sketch{SKETCH_DIM}/ntk_e"] = lambda ps=ps, sk=sk: compute_features(model, batch, ps, sketch=sk)
        st[f"{preset}+sketch{SKETCH_DIM}/ntk_ef_direction"] = lambda ps=ps, sk=sk: compute_features(
            model, batch, ps, force_mode="direction", sketch=sk)
        st[f"{preset}+sketch{SKETCH_DIM}/ntk_ef_probes_k16"] = lambda ps=ps, sk=sk: compute_features(
            model, batch, ps, force_mode="probes", n_probes=16, sketch=sk)
    return st


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(fns: Dict[str, Callable], rounds: int, device: str, once: set) -> Dict[str, dict]:
    """Interleaved rounds; stages in ``once`` run a single timed round. Returns seconds and MB."""
    times: Dict[str, List[float]] = {k: [] for k in fns}
    mem: Dict[str, float] = {}
    for name, fn in fns.items():  # warm-up + memory
        with PeakRSS(device) as pk:
            fn()
            sync(device)
        mem[name] = pk.peak_mb
    for r in range(rounds):
        for name, fn in fns.items():
            if name in once and r > 0:
                continue
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: {"seconds": statistics.median(v), "peak_rss_mb": round(mem[k], 1)} for k, v in times.items()}


def run_model(name: str, n_slabs: int, rounds: int, device: str, dtype: torch.dtype) -> dict:
    cfg = MODELS[name]
    torch.set_default_dtype(dtype)
    model = build_model(**cfg).to(device)
    batch = make_batch(slabs(n_slabs), cfg["r_max"], device, cfg.get("zs", ZS))
    n_atoms = int(batch["positions"].shape[0])
    fns = stages(model, batch, with_exact=(name == "tiny"))
    res = measure(fns, rounds, device, once={"ntk_ef_exact"})
    base = res["energy_forces"]["seconds"]
    out = {"n_structures": n_slabs, "atoms_per_structure": n_atoms / n_slabs,
           "n_parameters": sum(p.numel() for p in model.parameters()),
           "p_readouts": resolve_params(model).p,
           "p_presets": {pr: resolve_params(model, pr).p for pr in SKETCH_PRESETS}, "stages": {}}
    for k, v in res.items():
        out["stages"][k] = {"per_structure_s": round(v["seconds"] / n_slabs, 5),
                            "ratio_to_energy_forces": round(v["seconds"] / base, 3),
                            "peak_rss_mb": v["peak_rss_mb"]}
    out["targets_met"] = targets_met(out["stages"])
    return out


def targets_met(st: dict) -> Dict[str, bool]:
    """docs/design.md §10 ratio targets."""
    r = {k: v["ratio_to_energy_forces"] for k, v in st.items()}
    met = {"ntk_e<=1.2": r["ntk_e"] <= 1.2, "ntk_ef_direction<=3.5": r["ntk_ef_direction"] <= 3.5}
    for k in (1, 4, 16):
        met[f"probes_k{k}<={1.5 + 2 * k}"] = r[f"ntk_ef_probes_k{k}"] <= 1.5 + 2 * k
    for preset in SKETCH_PRESETS:
        key = f"{preset}+sketch{SKETCH_DIM}/ntk_ef_direction"
        met[f"{key}<=3.5"] = r[key] <= 3.5
    return met


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model only, 2 slabs, 3 rounds")
    ap.add_argument("--n-slabs", type=int, default=2, help="structures per batch")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median)")
    ap.add_argument("--models", default="tiny,medium_like")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = ap.parse_args()
    n, rounds = (2, 3) if args.quick else (args.n_slabs, args.rounds)
    models = ["tiny"] if args.quick else args.models.split(",")
    dtype = getattr(torch, args.dtype)
    report = {"device": args.device, "dtype": args.dtype, "torch_threads": torch.get_num_threads(),
              "models": {m: run_model(m, n, rounds, args.device, dtype) for m in models}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
