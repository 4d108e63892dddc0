"""Authentication and permissions for potluck's services: tokens, JWTs, TLS, the caller."""
