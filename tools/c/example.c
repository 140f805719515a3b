/*
 * example.c - fh1_encoder.h in use, and the test vectors the host checks.
 *
 * On a board you would hand the encoded bytes to the UART/USB driver; here
 * they are printed as hex so tests/test_c_encoder.py can decode them with
 * the host's Fh1Codec. Output, one record per line:
 *
 *     crc HHHH                          CRC-16 of "123456789" (0x29B1)
 *     pkt TYPE SEQ PAYLOAD_HEX WIRE_HEX (PAYLOAD_HEX "-" when empty)
 *     overflow N                        fh1_encode into a too-small buffer (0)
 *
 * Build: cc -std=c99 -Wall -Wextra -pedantic -O2 -o example example.c
 */
#include <stdio.h>
#include <string.h>

#include "fh1_encoder.h"

#define MAX_PAYLOAD 1024u

static uint8_t payload[MAX_PAYLOAD];
static uint8_t out[FH1_ENCODED_MAX(MAX_PAYLOAD)];

static void hex(const uint8_t *p, size_t n)
{
    size_t i;
    if (n == 0) {
        fputs("-", stdout);
    }
    for (i = 0; i < n; i++) {
        printf("%02x", p[i]);
    }
}

static void emit(uint8_t type, uint32_t seq, size_t len)
{
    size_t n = fh1_encode(out, sizeof out, type, seq, payload, len);
    printf("pkt %u %lu ", (unsigned)type, (unsigned long)seq);
    hex(payload, len);
    putchar(' ');
    hex(out, n);
    putchar('\n');
}

/* The streaming API: a sample assembled field by field, no payload buffer. */
static void emit_sample(uint32_t seq)
{
    const uint32_t ts = 123456u;
    const uint8_t status[2] = {0x00, 0x01};
    fh1_encoder_t enc;
    size_t n;
    uint8_t le[4];
    le[0] = (uint8_t)(ts & 0xFFu);
    le[1] = (uint8_t)((ts >> 8) & 0xFFu);
    le[2] = (uint8_t)((ts >> 16) & 0xFFu);
    le[3] = (uint8_t)(ts >> 24);
    fh1_begin(&enc, out, sizeof out, 0x01, seq);
    fh1_write(&enc, le, sizeof le);
    fh1_write(&enc, status, sizeof status);
    n = fh1_end(&enc);
    printf("pkt 1 %lu ", (unsigned long)seq);
    hex(le, sizeof le);
    hex(status, sizeof status);
    putchar(' ');
    hex(out, n);
    putchar('\n');
}

static void fill(size_t len, int with_zeros)
{
    size_t i;
    for (i = 0; i < len; i++) {
        payload[i] = with_zeros ? (uint8_t)(i & 0xFFu) : (uint8_t)(i % 255u + 1u);
    }
}

int main(void)
{
    static const size_t sizes[] = {1, 2, 245, 246, 247, 252, 253, 254, 255, 256, 500, 507, 508, 509, 1024};
    size_t i;
    uint8_t tiny[8];

    printf("crc %04x\n", (unsigned)fh1_crc16(0xFFFFu, "123456789", 9));

    emit(0x00, 0, 0); /* empty payload */
    memcpy(payload, "hello", 5);
    emit(0x01, 1, 5);
    memcpy(payload, "\0\0\1\0\2\0", 6); /* zeros everywhere, incl. first and last */
    emit(0x02, 2, 6);
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        fill(sizes[i], 0); /* no zeros: full 254-byte COBS blocks */
        emit(0x03, (uint32_t)(10 + i), sizes[i]);
        fill(sizes[i], 1); /* a zero every 256 bytes */
        emit(0x04, (uint32_t)(100 + i), sizes[i]);
    }
    memset(payload, 0, 300); /* all zeros */
    emit(0x05, 200, 300);
    memset(payload, 0xFF, 300);
    emit(0xEF, 201, 300);
    emit(0x06, 0xFFFFFFFEu, 0); /* seq wraps */
    emit(0x06, 0xFFFFFFFFu, 0);
    emit(0x06, 0, 0);
    memcpy(payload, "boot ok", 7);
    emit(FH1_TYPE_LOG, 1, 7);
    emit_sample(2);

    /* a buffer too small for the packet: nothing to send */
    memcpy(payload, "hello", 5);
    printf("overflow %lu\n", (unsigned long)fh1_encode(tiny, sizeof tiny, 0x01, 7, payload, 5));
    return 0;
}
