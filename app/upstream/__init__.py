"""The model: what a stream of it yields (``stream``), the OpenAI SDK client and its transport, the
upstream's wire events made into deltas, and the offline demo model. Knows nothing of the web."""
