"""The HTTP surface: the chat routes, the conversation routes, the pages, request bodies and their
checks, and the OpenAPI document. Views of a few lines; what they call lives below them."""
