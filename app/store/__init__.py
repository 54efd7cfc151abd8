"""What is stored: the models, the engine and its sessions, a turn's start, and the migrations."""
