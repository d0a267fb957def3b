"""The aiohttp HTTP/WebSocket/SSE API."""
