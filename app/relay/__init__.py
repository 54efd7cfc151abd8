"""One reply in flight to one client: deltas made into plain text or Server-Sent Events, the pump that
times silences, the client hang-up watcher, and how the reply ended. Plain Python, no Flask."""
