"""What every command-line entry point shares: the JAX runtime setup and the one-line error exit.

``setup_jax`` picks the backend and turns on jax's persistent compilation cache; ``quiet_jax_logs``
must run before jax is first imported; ``error_exit`` prints a bad input as one line on stderr and
returns exit code 2 (ARCHITECTURE, "Conventions").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


class RuntimeSetupError(ValueError):
    """The runtime asked for is not available here (e.g. --device gpu without a GPU): one line, exit code 2."""


def quiet_jax_logs() -> None:
    """Keep jaxlib's C++ logs at FATAL unless the user chose a level: jaxlib 0.9 logs a false "machine features do
    not match" error for every entry it loads from its own persistent compilation cache on this same machine.
    Takes effect only before jax is first imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def default_cache_dir() -> Path:
    """The user cache folder for jax's persistent compilation cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmcl_theory" / "jax"


def setup_jax(device: str = "cpu", compile_cache: bool = True) -> None:
    """Choose the backend (RuntimeSetupError if a GPU is asked for and missing) and turn on the compile cache
    (unless compile_cache is False or MMCL_NO_COMPILE_CACHE is set)."""
    import jax

    jax.config.update("jax_platforms", "cuda" if device == "gpu" else "cpu")
    if device == "gpu":
        try:
            jax.devices("gpu")
        except Exception:  # jax raises RuntimeError or backend-specific errors when CUDA is absent
            raise RuntimeSetupError("--device gpu was asked for, but JAX finds no GPU (install jax[cuda12] on a GPU "
                                    "machine, or use --device cpu)") from None
    if compile_cache and not os.environ.get("MMCL_NO_COMPILE_CACHE"):
        jax.config.update("jax_compilation_cache_dir", str(default_cache_dir()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def error_exit(message: object) -> int:
    """Print ``error: MESSAGE`` as one line on stderr (whitespace and newlines in the message collapsed) and
    return the exit code of bad input, 2."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    return 2
