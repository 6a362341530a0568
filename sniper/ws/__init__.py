"""The websocket thread (client.py), its connection's protocol state (session.py) and the
shared market and account state it keeps (state.py)."""
