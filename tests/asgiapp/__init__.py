"""An ASGI application for the ASGI server's tests: async views on the async
ORM, a sync view, a Server-Sent Events stream and Channels WebSocket consumers."""
