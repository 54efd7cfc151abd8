"""A conversation's reply as the server's own work: written whether or not anyone reads it.

``job`` writes a reply from the model's stream into its event ``log``; ``worker`` keeps the
worker's replies (the ones it writes, and the ones it follows for its readers), checkpoints
them into the database and publishes them to Redis (``streams``); ``feed`` follows a reply
written by another worker or host; ``reader`` sends one client a reply's events, from any
point, as plain text or Server-Sent Events. The HTTP routes are in ``app.web.chat`` and
``app.web.conversations``.
"""
