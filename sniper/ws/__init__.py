"""The websocket thread and the shared state it keeps (see state.py)."""
