/*
 * command_example.c - fh1_command.h in use: firmware that acks commands.
 *
 * Reads the host's bytes on stdin (on a board: the UART), byte by byte
 * through fh1_rx_byte, and answers every command (type 0xF0) with an ack
 * whose reply is "ok:" and the command's body, written to stdout (the
 * UART's other direction) with the board's own uplink seq. Each packet is
 * also logged on stderr, one line each, so tests/test_request_c.py can hold
 * the verdicts to the host codec's:
 *
 *     cmd SEQ BODY_HEX      a command (acked)
 *     pkt TYPE SEQ          a valid packet of another type (not acked)
 *     rej CODE              a rejected packet (FH1_ERR_*)
 *
 * Build: cc -std=c99 -Wall -Wextra -pedantic -O2 -o command_example command_example.c
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fh1_command.h"

#define MAX_BODY 256u

static uint8_t rxbuf[FH1_RX_BUF_SIZE(MAX_BODY)];
static uint8_t reply[3u + MAX_BODY];
static uint8_t ack[FH1_ACK_ENCODED_MAX(sizeof reply)];

static int write_all(const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(1, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(void)
{
    fh1_rx_t rx;
    fh1_packet_t pkt;
    uint32_t uplink_seq = 0;
    uint8_t in[512];
    fh1_rx_init(&rx, rxbuf, sizeof rxbuf);
    for (;;) {
        ssize_t got = read(0, in, sizeof in);
        ssize_t k;
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            break; /* EOF, or the host closed the line */
        }
        for (k = 0; k < got; k++) {
            int rc = fh1_rx_byte(&rx, in[k], &pkt);
            size_t i, n;
            if (rc < 0) {
                fprintf(stderr, "rej %d\n", rc);
            } else if (rc == 1 && pkt.type != FH1_TYPE_COMMAND) {
                fprintf(stderr, "pkt %u %lu\n", (unsigned)pkt.type, (unsigned long)pkt.seq);
            } else if (rc == 1) {
                fprintf(stderr, "cmd %lu ", (unsigned long)pkt.seq);
                for (i = 0; i < pkt.body_len; i++) {
                    fprintf(stderr, "%02x", pkt.body[i]);
                }
                fputs(pkt.body_len ? "\n" : "-\n", stderr);
                memcpy(reply, "ok:", 3);
                memcpy(reply + 3, pkt.body, pkt.body_len);
                n = fh1_encode_ack(ack, sizeof ack, uplink_seq++, pkt.seq, reply, 3u + pkt.body_len);
                if (n == 0 || write_all(ack, n) != 0) {
                    return 1;
                }
            }
        }
        fflush(stderr);
    }
    return 0;
}
