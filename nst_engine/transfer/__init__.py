"""One run of the optimisation: ``stylize()`` (``pipeline``) and what it is made of.

``pipeline`` (the entry point and the level loop, with the out-of-memory retry in tiles),
``run`` (a run's plan and progress), ``levels`` (the pyramid's sizes and tiling), ``objective``
and ``losses`` (what is minimised), ``optimise`` and ``adam`` (how), ``convert`` (PIL <->
tensors, resizing), ``color`` (keeping the content's colours), ``tiles`` (overlapping tiles and
their blend).

No module here is named ``stylize``: ``from nst_engine import stylize`` must always be the
function, and a submodule of that name would replace the package attribute once imported.
"""

from .pipeline import stylize

__all__ = ["stylize"]
