"""How a kernel family's dispatch picks its implementation.

`LRA_KERNELS=reference` forces the PyTorch reference, `LRA_KERNELS=triton` the Triton kernel
(an error where it cannot run, never a silent fallback); unset, each dispatch takes Triton for
CUDA tensors when Triton is installed and the reference elsewhere. An unknown value is an error,
so a typo cannot pass unnoticed. On a CPU, Triton runs only under its interpreter
(`TRITON_INTERPRET=1`, set before Triton is imported), which is how the tests check the kernels.
"""
import importlib.util
import os

CHOICES = ("reference", "triton")


def forced():
    """The implementation `LRA_KERNELS` forces: "reference", "triton", or None to pick by device."""
    value = os.environ.get("LRA_KERNELS", "").strip().lower()
    if not value:
        return None
    if value not in CHOICES:
        raise ValueError(f"LRA_KERNELS={value!r} is not known; set it to reference or triton, "
                         "or unset it to pick by device")
    return value


def interpreting():
    """Whether Triton kernels run in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip() not in ("", "0")


def triton_installed():
    return importlib.util.find_spec("triton") is not None


def use_triton(family, tensor):
    """Whether `family`'s dispatch should run its Triton kernel on `tensor`'s device.

    Raises when `LRA_KERNELS=triton` forces a kernel that cannot run here, saying why.
    """
    choice = forced()
    if choice == "reference":
        return False
    runnable = triton_installed() and (tensor.is_cuda or interpreting())
    if choice == "triton" and not runnable:
        why = ("Triton is not installed (pip install triton, Linux x86_64)"
               if not triton_installed()
               else f"the tensors are on {tensor.device.type}, and Triton runs on CUDA or, on a "
                    "CPU, only under TRITON_INTERPRET=1")
        raise RuntimeError(f"LRA_KERNELS=triton asks for the Triton kernel of {family}, but {why}; "
                           "unset LRA_KERNELS or set LRA_KERNELS=reference.")
    return runnable and (choice == "triton" or tensor.is_cuda)


def refuse_triton(family):
    """For a family without a Triton kernel yet: raise if one is forced."""
    if forced() == "triton":
        raise NotImplementedError(f"LRA_KERNELS=triton, but no Triton kernel exists yet for "
                                  f"{family}; unset LRA_KERNELS or set LRA_KERNELS=reference.")
