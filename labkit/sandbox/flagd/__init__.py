"""A flagd pod of the local lab: it loads the flag file at start and answers from that copy on its
ports (FlagdProcess): typed evaluation on 8013 (gRPC and Connect), 8014 management, 8015 sync, OFREP on 8016."""
from labkit.sandbox.flagd.evaluate import FLAG_FILE, FlagSet, Resolution, load_flags
from labkit.sandbox.flagd.logs import start_lines
from labkit.sandbox.flagd.ofrep import flag_value, ofrep, serve
from labkit.sandbox.flagd.process import FlagdProcess

__all__ = ["FLAG_FILE", "FlagSet", "FlagdProcess", "Resolution", "flag_value", "load_flags", "ofrep", "serve",
           "start_lines"]
