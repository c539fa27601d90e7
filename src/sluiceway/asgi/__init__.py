"""ASGI glue shared by every protocol: message types, scope building, cycles."""
