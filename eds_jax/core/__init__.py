"""The inference core: EBMs, the steering intervention, the decode loop, the saved-steering format."""
