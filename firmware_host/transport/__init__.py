"""The serial seam: the ``Port`` interface everything above sees, the real
backend (ttys, ``socket://`` and other pyserial URLs), a scripted fake for
tests, and USB auto-detection."""
