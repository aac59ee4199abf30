"""A workshop for a room, on JupyterHub: N seats, each its own JupyterLab on the workbook and its own
local lab, a facilitator's board built from each seat's real state, and a rehearsal of the whole room.

    seats.py     the room's folder: seats, their homes, passwords and per-seat variables
    auth.py      the hub's authenticator: one generated password per seat (and the facilitator)
    hub.py       the hub's configuration for a room, and the hub process: start, wait, stop
    board.py     the facilitator's board, a hub-managed service at /services/labkit-board/
    state.py     one seat's real state, read from its own lab with labkit's public API
    report.py    a seat's kernels report their timeline steps to the board (the hub's credentials)
    kernel.py    a notebook run in a seat's own server and kernel, over Jupyter's REST and websocket
    start.py     a room started (folder, shared tenant, hub) and stopped: what cli and rehearse share
    rehearse.py  `labkit room rehearse`: every seat logs in and runs 01; times, memory, the board
    cli.py       `labkit room ...`
    z2jh/        the same seats on a cluster: Zero to JupyterHub values and the seat image

Imports go one way: cli -> rehearse -> start -> hub/seats/tenant/kernel.
It imports labkit's public API only; nothing in labkit imports it (the CLI hands `labkit room` over).
"""
