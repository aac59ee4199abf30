"""Run by each workbook kernel at start (PYTHONSTARTUP, set by labkit.workbook): a labkit error, or
`lab` missing after a kernel restart, shows as a sentence saying what to run. Defines no names."""
try:
    __import__("labkit.kernel", fromlist=["install_hooks"]).install_hooks()
except Exception:  # noqa: BLE001 - a kernel must start even when labkit cannot be imported
    pass
