"""Import-order and warning hygiene for mace / e3nn / torch (see shared TRAPS.md)."""

import logging
import warnings

_DONE = False


def setup() -> None:
    """Import mace before e3nn and silence warnings that say nothing to a user."""
    global _DONE
    if _DONE:
        return
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*")
    warnings.filterwarnings("ignore", message=".*TorchScript.*")
    warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="e3nn")
    warnings.filterwarnings("ignore", message=".*cuequivariance.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # mace prints a cuequivariance notice
        import mace  # noqa: F401  (must precede any e3nn.o3 import)
        import mace.modules  # noqa: F401

    logging.getLogger("mace").setLevel(logging.WARNING)
    _DONE = True
