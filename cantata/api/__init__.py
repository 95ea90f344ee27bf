"""The Runware protocol: schemas, validation, HTTP, WebSocket, delivery. Knows no tensors."""
