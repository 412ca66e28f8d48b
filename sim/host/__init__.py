"""Host side: the driver and packet codec, and the end-to-end training step."""
