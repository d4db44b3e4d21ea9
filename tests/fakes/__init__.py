"""Hand-written in-memory fakes behind lakehook's ports (see ``pipeline.ports``)."""
