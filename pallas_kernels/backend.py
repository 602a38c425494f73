"""Which kernel runs where: Pallas on GPU (Triton lowering) or TPU (Mosaic), interpret mode on CPU, else the reference.

The model calls `resolve` once per switch (e.g. `compute.attention_impl`) and the kernels' wrappers call
`kernel_mode` to turn their `interpret=` / `flavour=` arguments into a concrete choice. Requests that cannot be
honoured fail here with a sentence that names the switch, the backend and the way out, not deep inside a lowering.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax

Kind = Literal["attention", "fp8_matmul"]
Flavour = Literal["triton", "mosaic"]

# What the user-facing switch is called, for error messages.
_SWITCH = {"attention": "compute.attention_impl", "fp8_matmul": "compute.matmul"}
REFERENCE_NAMES = ("xla", "reference")


@dataclasses.dataclass(frozen=True)
class KernelChoice:
    """use_pallas False means: call the pure-jnp reference. flavour is the Pallas lowering style when used."""

    use_pallas: bool
    interpret: bool = False
    flavour: Flavour | None = None


def platform() -> str:
    """'cpu', 'gpu' or 'tpu' (jax.default_backend() spells CUDA and ROCm both as 'gpu')."""
    return jax.default_backend()


def default_flavour(plat: str | None = None) -> Flavour:
    """Mosaic-style kernels (grid-carried accumulators, scalar prefetch) on TPU, Triton-style everywhere else."""
    return "mosaic" if (plat or platform()) == "tpu" else "triton"


def _native_problem(kind: Kind, plat: str) -> str | None:
    """Why `kind` cannot be compiled natively on `plat`, or None when it can."""
    if plat not in ("gpu", "tpu"):
        return f"backend '{plat}' has no Pallas compiler"
    if plat == "gpu" and kind == "fp8_matmul":
        cc = getattr(jax.devices()[0], "compute_capability", None)
        try:
            major, minor = (int(p) for p in str(cc).split(".")[:2])
        except ValueError:
            return None  # unknown (e.g. ROCm): let the lowering decide
        if (major, minor) < (8, 9):
            return f"GPU compute capability {cc} has no FP8 tensor cores (needs 8.9+: Ada, Hopper, Blackwell)"
    return None


def resolve(kind: str, requested: str, *, interpret: bool = False, plat: str | None = None) -> KernelChoice:
    """Turn a model switch into a kernel choice.

    requested: "pallas" (must run the kernel, natively or, with interpret=True, in interpret mode),
    "xla"/"reference" (the pure-jnp reference), or "auto" (the kernel where it compiles natively, else the
    reference). Raises ValueError with the reason when "pallas" cannot run.
    """
    plat = plat or platform()
    switch = _SWITCH.get(kind)
    if switch is None:
        raise ValueError(f"unknown kernel kind {kind!r}; expected one of {sorted(_SWITCH)}")
    if requested in REFERENCE_NAMES:
        return KernelChoice(use_pallas=False)
    problem = _native_problem(kind, plat)
    if requested == "auto":
        if problem is None:
            return KernelChoice(True, False, default_flavour(plat))
        return KernelChoice(True, True, default_flavour(plat)) if interpret else KernelChoice(use_pallas=False)
    if requested != "pallas":
        raise ValueError(f"{switch}={requested!r} is not one of 'pallas', 'xla', 'auto'")
    if interpret:
        return KernelChoice(True, True, default_flavour(plat))
    if problem is not None:
        raise ValueError(f"{switch}='pallas' needs a GPU or TPU, or interpret mode; {problem}. Use {switch}='xla' "
                         f"(the jnp reference) or pass interpret=True (slow; meant for tests on CPU).")
    return KernelChoice(True, False, default_flavour(plat))


def kernel_mode(kind: Kind, interpret: bool | None, flavour: Flavour | None) -> tuple[bool, Flavour]:
    """(interpret, flavour) for a kernel wrapper: interpret=None means native, which must be possible here."""
    plat = platform()
    if interpret is None:
        problem = _native_problem(kind, plat)
        if problem is not None:
            raise ValueError(f"the Pallas {kind} kernel cannot compile here: {problem}. "
                             f"Pass interpret=True to run it in interpret mode (slow; for tests).")
        interpret = False
    if flavour is None:
        flavour = default_flavour(plat)
    if flavour not in ("triton", "mosaic"):
        raise ValueError(f"flavour={flavour!r} is not 'triton' or 'mosaic'")
    if not interpret and plat in ("gpu", "tpu") and flavour != default_flavour(plat):
        raise ValueError(f"flavour={flavour!r} kernels do not compile on backend '{plat}'; "
                         f"use {default_flavour(plat)!r} or interpret=True")
    return bool(interpret), flavour
