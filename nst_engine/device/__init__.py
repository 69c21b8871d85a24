"""Where a run executes and what it may use there: the device and its precision (``resolve``),
the CPU's measured choice of bfloat16 or float32 (``cpu_precision``), the memory model and the
device's budget (``memory``), and glibc's heap kept during CPU runs (``heap``).

Importing this package imports nothing; ``resolve`` and ``memory`` import torch.
"""
