"""Streaming: the stream guard, forced streaming, resumption and checkpoints."""
