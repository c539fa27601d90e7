"""A chat with rooms over WebSocket, spread across processes by a channel layer."""
