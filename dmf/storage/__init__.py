"""Our own storage: blob clients, streamed and server-side copies, and the Table-backed stores."""
