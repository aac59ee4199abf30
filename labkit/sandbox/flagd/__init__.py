"""A flagd pod of the local lab: it loads the flag file at start and answers OFREP from that copy."""
from labkit.sandbox.flagd.evaluate import FLAG_FILE, FlagSet, load_flags
from labkit.sandbox.flagd.logs import start_lines
from labkit.sandbox.flagd.ofrep import flag_value, ofrep, serve

__all__ = ["FLAG_FILE", "FlagSet", "flag_value", "load_flags", "ofrep", "serve", "start_lines"]
