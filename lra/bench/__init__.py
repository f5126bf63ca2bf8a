"""`lra bench`: one module per command over one shared core.

    core.py        task shapes, timing (triton.testing.do_bench on CUDA, one CPU loop), device
                   naming, the JSON files (written atomically)
    candidates.py  candidates timed side by side, their ratios and table (kernels and train)
    layers.py      `lra bench layers`: one block of each model in a fresh process
    data.py        `lra bench data`: the ListOps and Pathfinder generators
    kernels.py     `lra bench kernels`: each kernel at the LRA task shapes against anchors
    train.py       `lra bench train`: one optimizer step of each model at each task
    report.py      `lra bench report`: kernels and train JSON as Markdown, targets checked
    compile_check.py  every Triton kernel compiled for a GPU without one (`make kernels-check`);
                   a developer tool, kept out of the kernels package that the models import

Importing the package imports nothing: the CLI reads `core.KERNEL_CASES` for its parser.
"""
