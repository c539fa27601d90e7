# Types of the C extension src/sluiceway/http1/_head.c (see its opening comment).

def parse_head(
    data: bytes, start: int, max_line: int, max_head: int, /
) -> tuple[str, bytes, str, list[tuple[bytes, bytes]], bool, int] | None: ...
