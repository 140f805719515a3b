"""The transport's bounds, in one place, each with the reason for its value.

Every port kind (tty, ``socket://``, other pyserial URLs) reads and writes
under the same limits, so they live here rather than in one of them.
"""

from __future__ import annotations

import errno

#: bytes buffered per port before the transport stops reading (backpressure)
READ_LIMIT = 1 << 20
#: bytes of downlink queued per port; a write beyond it is refused (the
#: device is not taking its input, and memory must stay bounded)
WRITE_LIMIT = 1 << 20
#: bytes asked of the OS per readiness event; pyserial-asyncio's 1024 would
#: mean one callback per 1 KiB at 921600 baud
MAX_READ_SIZE = 1 << 16
#: how long closing a port may spend writing queued downlink before it drops the rest
CLOSE_TIMEOUT = 1.0
#: how long a ``socket://`` connect may take (pyserial's socket handler waited 5 s too)
CONNECT_TIMEOUT = 5.0
#: TCP keepalive of ``socket://`` and ``rfc2217://`` connections: after this
#: many seconds idle, probe every KEEPALIVE_INTERVAL s, and give up after
#: KEEPALIVE_COUNT unanswered probes (a silent network drop ends the
#: connection in about 25 s; a device that is merely quiet costs a probe each 10 s)
KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
#: how long an ``rfc2217://`` open waits for the server to acknowledge the
#: line settings (pyserial's RFC 2217 client waited 3 s per option too)
NEGOTIATION_TIMEOUT = 3.0
#: After a read shorter than READ_COALESCE_BYTES, the next read of a tty waits
#: for the next tick of the backend's ReadClock (every READ_COALESCE seconds
#: unless ``[serial] read_coalesce`` says otherwise), like a USB-serial
#: adapter's latency timer: busy ports then cost one wakeup each per tick, all
#: in one loop iteration, instead of one per USB packet each, and a silent
#: port costs nothing (it waits for readiness). A read that returned more is
#: followed at once, so fast links are never held back. The receive timestamp
#: is taken after the read, so this adds at most one tick to wire->host
#: latency and nothing to receive->sink latency.
READ_COALESCE = 0.02
#: A tty read returns at most what the line discipline holds: 4095 bytes
#: (n_tty's 4 KiB buffer, measured on ptys). A read this close to that means
#: more is waiting in the driver. The bar sits well above one tick of 921600
#: baud (1,843 bytes, or ~2,300 for a tick that fires late) so paced fast
#: ports are not followed at once only to find a few bytes.
READ_COALESCE_BYTES = 3584
#: Closing a tty first takes what the kernel still holds for it (up to this
#: much), so frames that had arrived when the runtime stopped are decoded and
#: flushed, not dropped with the file descriptor.
FINAL_READ_MAX = 1 << 16

#: errors that mean "nothing now, try again", not "the device is gone"
RETRY_ERRNOS = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)
