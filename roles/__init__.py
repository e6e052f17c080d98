"""pyinfra roles: each turns a Debian host reachable over SSH into one hardened kind of host."""
