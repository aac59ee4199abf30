"""A flagd pod of the local lab: it loads the flag file at start and answers from that copy: typed
evaluation on 8013 (gRPC and Connect), OFREP on 8016."""
from labkit.sandbox.flagd.evaluate import FLAG_FILE, FlagSet, Resolution, load_flags
from labkit.sandbox.flagd.logs import start_lines
from labkit.sandbox.flagd.ofrep import flag_value, ofrep
from labkit.sandbox.flagd.ports import serve

__all__ = ["FLAG_FILE", "FlagSet", "Resolution", "flag_value", "load_flags", "ofrep", "serve", "start_lines"]
