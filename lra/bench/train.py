"""`lra bench train`: one optimizer step (forward, backward, AdamW) of each model at each LRA
task shape.

    lra bench train --device cuda                      # each model x task, S4 LRA configs
    lra bench train --models s4d mamba --tasks listops --d-model 64 --n-layers 1

Each step runs with our kernels (LRA_KERNELS unset, and forced Triton) and with the PyTorch
references (LRA_KERNELS=reference), on random inputs of the task's kind and length, at the batch
of conf/experiment/<model>/<task>.yaml and, on a GPU, in its trainer's precision (bf16-mixed:
under bf16 autocast, as Lightning runs it). Shapes, scaling and timing are lra.bench.core's, the
candidates, table and JSON those of `lra bench kernels` (lra.bench.candidates).
"""
import math

from lra.bench.candidates import (
    Candidate,
    add_ratios,
    add_throughput,
    comparison_record,
    measure,
    print_table,
    triton_candidate,
)
from lra.bench.core import (
    CPU_LAYERS,
    CPU_SCALE,
    TASKS,
    Shape,
    prepare_device,
    resolve_device,
    scaled_length,
    write_record,
)


def train_config(model, task, d_model=None, n_layers=None):
    """The resolved config of `model` on `task`: conf/experiment/<model>/<task>.yaml where it
    exists."""
    from omegaconf import OmegaConf

    from lra.config import compose
    from lra.plugins import config_options

    experiment = f"{model}/{task}"
    overrides = ([f"experiment={experiment}"] if experiment in config_options("experiment")
                 else [f"model={model}", f"task={task}"])
    cfg = OmegaConf.to_container(compose(overrides), resolve=True)
    for key, value in (("d_model", d_model), ("n_layers", n_layers)):
        if value is not None:
            cfg["model"][key] = value
    return cfg


def random_batch(data, batch, length, padded, device):
    """Random inputs of the task's kind and length, padded like `Shape.lengths`, random targets."""
    import torch

    shape = Shape(data.name, batch, length, padded, device, torch.float32)
    mask = shape.mask()
    mask = torch.ones(batch, length, dtype=torch.bool, device=device) if mask is None else mask

    def inputs(mask):
        if data.input_kind == "tokens":
            x = torch.randint(1, data.vocab_size, (batch, length), device=device)
            return x * mask  # token 0 is padding
        return torch.randn(batch, length, data.d_input, device=device) * mask.unsqueeze(-1)

    out = {"inputs": inputs(mask), "mask": mask,
           "target": torch.randint(0, data.num_classes, (batch,), device=device)}
    if data.dual:  # the second documents: the same lengths in the other order
        out.update(inputs2=inputs(mask.flip(0)), mask2=mask.flip(0))
    return out


def bench_model_task(model, task, scale, device, repeats, interpret, d_model=None,
                     n_layers=None, batch=None):
    """One training step (forward, backward, AdamW step) of `model` on `task` under each
    LRA_KERNELS; the row."""
    import torch
    import torch.nn.functional as F

    from lra import registry
    from lra.config import options
    from lra.lit import param_groups
    from lra.train import build_classifier

    cfg = train_config(model, task, d_model, n_layers)
    data = registry.task(cfg["task"]["name"])(data_dir=cfg["data_dir"], seed=0,
                                              **options(cfg["task"]))  # reads no files
    length = scaled_length(task, data.seq_len, scale)
    if cfg["model"].get("grid"):  # a 2-D model follows the scaled image
        cfg["model"]["grid"] = [math.isqrt(length)] * 2
    if cfg["model"].get("max_len"):  # so does a length the model is built for (S4's C~, positions)
        cfg["model"]["max_len"] = max(length + 1, round(cfg["model"]["max_len"] * scale))
        data.seq_len = length  # what the batches below hold
    rows = batch or max(1, round(cfg["task"]["batch_size"] * scale))
    torch.manual_seed(0)
    classifier = build_classifier(cfg, data).to(device).train()
    groups = param_groups(classifier, cfg["optim"]["weight_decay"])
    optimizer = torch.optim.AdamW(groups, lr=cfg["optim"]["lr"])
    examples = random_batch(data, rows, length, TASKS[task][2], device)
    cuda = device.startswith("cuda")
    precision = str(cfg["trainer"]["precision"]) if cuda else "32-true"
    mixed = precision.startswith("bf16")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mixed):
            loss = F.cross_entropy(classifier(examples), examples["target"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    candidates = {"triton": triton_candidate(step, device, interpret),
                  "default": Candidate("ours", step),
                  "reference": Candidate("reference", step, "reference")}
    timed = {label: measure(c, step, repeats, cuda) for label, c in candidates.items()}
    docs = 2 if data.dual else 1
    for c in timed.values():
        add_throughput(c, rows * length * docs)
    row = {"case": model, "what": f"training step, recipe {cfg['recipe']}", "task": task,
           "shape": {"batch": rows, "documents": docs, "length": length,
                     "d_model": cfg["model"]["d_model"], "n_layers": cfg["model"]["n_layers"],
                     "padded": TASKS[task][2], "precision": precision,
                     "max_len": cfg["model"].get("max_len")},
           "params": sum(p.numel() for p in classifier.parameters()),
           "tokens": rows * length * docs, "candidates": timed}
    add_ratios(row, ())
    return row


def bench_train(models=None, tasks=None, scale=None, device=None, repeats=None, interpret=False,
                threads=1, d_model=None, n_layers=None, batch=None, out_dir="benchmarks/results"):
    """Time one optimizer step of each model at each task, ours against the references; print,
    write, return the record."""
    from lra import plugins, registry

    device = resolve_device(device)
    cuda = device.startswith("cuda")
    scale = scale or (1.0 if cuda else CPU_SCALE)
    repeats = repeats or (10 if cuda else 3)
    n_layers = n_layers or (None if cuda else CPU_LAYERS)
    name, peaks = prepare_device(device, interpret, threads)
    plugins.register()
    models = models or list(registry.entries("model"))
    for model in models:
        registry.model(model)  # an unknown name fails here, listing the available ones
    if not cuda:
        print(f"lra bench train: no GPU, timing on the CPU ({threads} thread(s)) at --scale "
              f"{scale:g} of each batch and length, {n_layers} layer(s)"
              f"{'; Triton in its interpreter' if interpret else ''}")
    rows = [bench_model_task(model, task, scale, device, repeats, interpret, d_model, n_layers,
                             batch)
            for model in models for task in (tasks or TASKS)]
    options = {"scale": scale, "repeats": repeats, "interpret": interpret, "threads": threads,
               "d_model": d_model, "n_layers": n_layers, "batch": batch}
    record = comparison_record("train", name, cuda, peaks, options, rows)
    out = write_record(record, out_dir)
    print_table(record)
    print(f"wrote {out}")
    return record
