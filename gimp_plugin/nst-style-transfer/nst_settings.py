"""Made by gimp_plugin/make_settings.py from nst_engine/params.py and nst_engine/cli.py: do not
edit. The engine's ranges for the settings the dialog shows (GIMP's Python cannot import the
engine); nst_core turns them into the arguments' ranges. Standard library only."""

#: StyleParams field -> (minimum, maximum, default), as params.py defines them.
RANGES = {
    'strength': (0.0, 10.0, 1.0),
    'max_size': (64, 8192, 512),
    'iterations': (1, 20000, 300),
    'seed': (0, 9223372036854775807, None),
    'temporal_weight': (0.0, 1000000000.0, 100.0),
}
#: The engine's devices (nst_engine.cli.DEVICES), in its order.
DEVICES = ('auto', 'cpu', 'cuda', 'mps')
