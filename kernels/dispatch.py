"""How a kernel family's dispatch picks its implementation, and falls back safely.

`LRA_KERNELS=reference` forces the PyTorch reference, `LRA_KERNELS=triton` the Triton kernel
(an error where it cannot run, never a silent fallback); unset, each dispatch takes Triton for
CUDA tensors when Triton is installed and the reference elsewhere. An unknown value is an error,
so a typo cannot pass unnoticed. On a CPU, Triton runs only under its interpreter
(`TRITON_INTERPRET=1`, set before Triton is imported), which is how the tests check the kernels.

Unforced, a GPU run fails safe (`choose`):
- capability rules: bfloat16 tiles need sm_80 or newer; ROCm (torch.version.hip) takes IEEE dots
  (`fp32_dot_precision`), the only precision its backend accepts;
- the first launch of each family, dtype and variant in a process runs a small probe through the
  kernel and the reference, forward and backward: a compile error, OutOfResources, any other
  exception or a mismatch prints ONE warning with the reason, and that variant runs the reference
  from then on;
- a CUDA tensor that takes a reference path warns once per family and reason.
`RAN` keeps what each family ran (`triton`, or `reference` with the reason); training writes it
into the result record (`kernels`) and `lra doctor --kernels` prints it for the machine.

Importing this module pins Triton's fused multiply-add on (`TRITON_DEFAULT_FP_FUSION=1`, unless
set): the kernels' tolerances were measured with it, Triton's default up to 3.9, which 3.10
turns off.
"""
import importlib.util
import os
import warnings

import torch

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

CHOICES = ("reference", "triton")
NAMES = {"additive_recurrence": "the additive recurrence", "cauchy": "the S4 Cauchy product",
         "selective_scan": "the selective scan", "vandermonde": "the S4D Vandermonde product"}
RAN = {}  # family -> {"path": "triton" | "reference", "reason": str | None}
_probed = {}  # (family, dtype, variant) -> None (the kernel passed) or why it failed
_warned = set()  # (family, reason) pairs already warned about


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


def on_gpu(tensor):
    """Whether the tensor lives on a GPU (CUDA or ROCm); the tests patch it to simulate one."""
    return tensor.is_cuda


def is_hip():
    return torch.version.hip is not None


def capability(tensor):
    """(major, minor) compute capability of the tensor's GPU."""
    return torch.cuda.get_device_capability(tensor.device)


def use_triton(family, tensor):
    """Whether `family`'s dispatch should run its Triton kernel on `tensor`'s device.

    Raises when `LRA_KERNELS=triton` forces a kernel that cannot run here, saying why.
    """
    choice = forced()
    if choice == "reference":
        return False
    runnable = triton_installed() and (on_gpu(tensor) or interpreting())
    if choice == "triton" and not runnable:
        why = ("Triton is not installed (pip install triton, Linux x86_64)"
               if not triton_installed()
               else f"the tensors are on {tensor.device.type}, and Triton runs on CUDA or, on a "
                    "CPU, only under TRITON_INTERPRET=1")
        raise RuntimeError(f"LRA_KERNELS=triton asks for the Triton kernel of "
                           f"{NAMES.get(family, family)}, but {why}; "
                           "unset LRA_KERNELS or set LRA_KERNELS=reference.")
    return runnable and (choice == "triton" or on_gpu(tensor))


def refuse_triton(family):
    """For a family without a Triton kernel yet: raise if one is forced."""
    if forced() == "triton":
        raise NotImplementedError(f"LRA_KERNELS=triton, but no Triton kernel exists yet for "
                                  f"{family}; unset LRA_KERNELS or set LRA_KERNELS=reference.")


def why_not_triton(family, tensor, unsupported=None):
    """Why `family` runs its reference on `tensor`, or None where the Triton kernel may run.

    unsupported: the family's own reason (a dtype or shape its kernel does not take), or None.
    """
    choice = forced()
    if choice == "reference":
        return "LRA_KERNELS=reference"
    if not use_triton(family, tensor):
        return ("Triton is not installed" if not triton_installed()
                else f"the tensors are on {tensor.device.type}")
    if unsupported and choice != "triton":
        return unsupported
    if choice == "triton" or not on_gpu(tensor):
        return None
    if is_hip():
        return None  # IEEE dots (fp32_dot_precision); the probe checks the rest
    major, minor = capability(tensor)
    if tensor.dtype == torch.bfloat16 and major < 8:
        return f"bfloat16 tiles need sm_80 or newer; this GPU is sm_{major}{minor}"
    return None


def choose(family, tensor, probe=None, variant=None, unsupported=None,
           reference="the PyTorch reference"):
    """"triton" or "reference" for this call, recorded in RAN, warning once where a GPU falls back.

    probe: a function that runs the kernel and the reference on small inputs like this call's and
    raises (AssertionError for a mismatch) where the kernel cannot be trusted; it runs once per
    (family, dtype, variant) in a process, on GPU calls that are not forced. reference: what the
    fallback runs, for the warning.
    """
    reason = why_not_triton(family, tensor, unsupported)
    if reason is None and probe is not None and forced() is None and on_gpu(tensor):
        key = (family, tensor.dtype, variant)
        if key not in _probed:
            _probed[key] = _failure(probe)
        reason = _probed[key]
    if reason is None:
        RAN.setdefault(family, {"path": "triton", "reason": None})
        return "triton"
    RAN[family] = {"path": "reference", "reason": reason}
    if on_gpu(tensor) and forced() is None and (family, reason) not in _warned:
        _warned.add((family, reason))
        warnings.warn(f"{family}: the Triton kernel is not used on this GPU ({reason}); "
                      f"running {reference} from now on", RuntimeWarning, stacklevel=3)
    return "reference"


def _failure(probe):
    """None where the probe passes, else the reason in one line.

    The first call may come from validation (inference mode, no grad) or under autocast: the
    probe runs with gradients on and autocast off, whatever the caller's mode.
    """
    try:
        with (torch.inference_mode(False), torch.enable_grad(),
              torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False)):
            probe()
    except AssertionError as err:
        return f"the probe differs from the reference: {err}"
    except Exception as err:  # compile errors, OutOfResources, launch errors: all mean don't trust
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".strip(": ")
    return None


def check_probe(got, want, tol, what="output"):
    """Raise AssertionError where the kernel's tensors differ from the reference's by more than tol
    (relative error in the max norm)."""
    for i, (a, b) in enumerate(zip(got, want)):
        a, b = (torch.view_as_real(t.detach().resolve_conj()) if t.is_complex() else t.detach()
                for t in (a, b))
        a, b = a.double(), b.double()
        err = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
        if not err <= tol:  # catches NaN too
            raise AssertionError(f"{what} {i}: relative error {err:.2e} above {tol:.0e}")


def probe_pair(kernel, reference, inputs, tol, what):
    """Run kernel(*inputs) and reference(*inputs) (float16/bfloat16 upcast to float32), forward and
    backward for one fixed cotangent, and `check_probe` the output and every input gradient."""
    results = []
    for fn in (kernel, reference):
        leaves = []
        for t in inputs:
            if fn is reference and t.dtype in (torch.float16, torch.bfloat16):
                t = t.float()
            wants_grad = t.is_floating_point() or t.is_complex()
            leaves.append(t.detach().clone().requires_grad_(wants_grad))
        out = fn(*leaves)
        g = torch.randn(out.shape, dtype=out.dtype if out.is_complex() else torch.float32,
                        generator=torch.Generator().manual_seed(1)).to(out.device, out.dtype)
        wrt = [t for t in leaves if t.requires_grad]
        grads = torch.autograd.grad(out, wrt, g, allow_unused=True)
        results.append([out, *grads])
    got, want = results
    pairs = [(a, b) for a, b in zip(got, want) if a is not None and b is not None]
    check_probe(*zip(*pairs), tol, what) if pairs else None


def torch_allows_tf32():
    """Whether torch lets float32 matmuls round to TF32: `torch.backends.cuda.matmul.fp32_precision`
    when set ("tf32" or "ieee"), otherwise `torch.backends.cuda.matmul.allow_tf32`. Never raises
    (torch raises on the older flag once the two APIs were mixed; then False)."""
    matmul = torch.backends.cuda.matmul
    try:
        chosen = getattr(matmul, "fp32_precision", "none")
        if chosen in ("tf32", "ieee"):
            return chosen == "tf32"
        return bool(matmul.allow_tf32)
    except (RuntimeError, AttributeError):
        return False


def fp32_dot_precision():
    """tl.dot's input precision for float32 inputs where IEEE is the exact choice: "tf32" where
    torch allows TF32, else "ieee" (always on ROCm, whose backend rejects tf32 and tf32x3).
    Kernels read it once per call and save it for their backward."""
    return "tf32" if torch_allows_tf32() and not is_hip() else "ieee"


def ran():
    """A copy of RAN for a result record: {family: {"path": ..., "reason": ...}}."""
    return {family: dict(entry) for family, entry in RAN.items()}


def reset():
    """Forget what ran, was probed and was warned about, as in a new process (for tests)."""
    RAN.clear()
    _probed.clear()
    _warned.clear()


def ran_table():
    """RAN as lines `family  path  reason`, families sorted."""
    return [f"{family:<22} {entry['path']:<10} {entry['reason'] or ''}".rstrip()
            for family, entry in sorted(RAN.items())]
