"""The ``stylize`` command line (``cli`` parses; this package does the work):

- ``request``: what was asked, made once from the arguments: ``StillRequest``,
  ``ClipRequest`` or ``BatchRequest``, every input read and checked before the model loads;
- ``command``: ``stylize_command`` (the request, the model, then the kind's function),
  ``stylize_still`` and ``stylize_batch``;
- ``clip``: ``stylize_clip``, the frame loop and the frames done when one fails;
- ``progress_bar``: the terminal's progress line.
"""
