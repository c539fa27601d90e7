"""HTTP/2 (RFC 9113): a sans-I/O engine, its HPACK codec and the asyncio adapter."""
