"""Small Python programs the tests run on lab hosts (``python3 -c PROGRAM ARGS``)."""

# Prints "open" when a TCP connection to argv[1]:argv[2] succeeds within 2 s, else "closed".
CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close(); print('open')\n"
    "except OSError as exc:\n"
    "    print('closed', exc)\n"
)
