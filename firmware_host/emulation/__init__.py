"""Emulated boards without hardware, one emulator for the CLI and the test kit.

``wire`` makes a board's bytes (frames per codec, damaged frames, noise),
``virtualport`` the pty pair behind a stable link, ``stream`` the paced
firmware loop, ``hostwatch`` notices a host opening the port, ``board`` is one
emulated board built from those (the test kit's ``EmulatedBoard``), and
``fleet`` plays many boards with payload ``generators`` and faults for
``run --emulate`` and ``emulate``; ``acks`` is how a board answers the
host's fh1 commands. Nothing on the data path imports this
package, and it imports neither the test kit nor the CLI.
"""
