/*
 * fh1_command.h - take firmware-host commands on a microcontroller and ack them.
 *
 * Header-only, portable C99, no malloc, no stdio; built on fh1_encoder.h.
 * The host's `firmware-host request` (Runtime.request) sends a command, an
 * fh1 packet of type FH1_TYPE_COMMAND (0xF0) whose seq the host picks; the
 * firmware answers with an ack, an fh1 packet of type FH1_TYPE_COMMAND_ACK
 * (0xF1) with its own uplink seq and the payload
 *
 *     command seq (uint32 LE) | reply bytes (0 or more)
 *
 * A host that hears no ack sends the same command again, with the same seq
 * (so a repeat can be recognised). Receiving, byte by byte from the UART:
 *
 *     static uint8_t rxbuf[FH1_RX_BUF_SIZE(64)];     (commands of up to 64 bytes)
 *     fh1_rx_t rx;
 *     fh1_packet_t pkt;
 *     fh1_rx_init(&rx, rxbuf, sizeof rxbuf);
 *     ...for each received byte b:
 *     if (fh1_rx_byte(&rx, b, &pkt) == 1 && pkt.type == FH1_TYPE_COMMAND) {
 *         uint8_t ack[FH1_ACK_ENCODED_MAX(2)];
 *         size_t n = fh1_encode_ack(ack, sizeof ack, uplink_seq++, pkt.seq, "ok", 2);
 *         if (n) uart_write(ack, n);
 *     }
 *
 * A packet is checked exactly as the host's codec checks one: COBS, length
 * (header and CRC at least, the buffer at most), CRC-16/CCITT-FALSE and
 * version; an empty packet (two 0x00 in a row) is a resync, not an error.
 */
#ifndef FH1_COMMAND_H
#define FH1_COMMAND_H

#include "fh1_encoder.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Why a packet was rejected (fh1_decode, fh1_rx_byte). */
#define FH1_ERR_COBS (-1)    /* a COBS block runs past the end */
#define FH1_ERR_LENGTH (-2)  /* shorter than header + CRC, or longer than the buffer */
#define FH1_ERR_CRC (-3)     /* the CRC does not match */
#define FH1_ERR_VERSION (-4) /* not fh1 version 1 */

/* Receive buffer that holds any packet with a payload of up to len bytes, encoded. */
#define FH1_RX_BUF_SIZE(len) FH1_COBS_MAX((len) + FH1_HEADER_LEN + FH1_CRC_LEN)
/* Output buffer that always fits an ack with a reply of len bytes. */
#define FH1_ACK_ENCODED_MAX(len) FH1_ENCODED_MAX((len) + 4u)

typedef struct {
    uint8_t type;
    uint32_t seq;
    const uint8_t *body; /* the payload, inside the buffer that was decoded */
    size_t body_len;
} fh1_packet_t;

/* Decode one encoded packet (the bytes between two 0x00, without them) in
 * place: buf[0..len) is overwritten by the packet. Returns 0 and fills pkt,
 * or an FH1_ERR_* code. In place is safe: COBS never decodes longer. */
static inline int fh1_decode(uint8_t *buf, size_t len, fh1_packet_t *pkt)
{
    size_t i = 0, out = 0, n;
    uint16_t crc, stored;
    if (len == 0u) {
        return FH1_ERR_COBS;
    }
    for (;;) {
        uint8_t code = buf[i];
        size_t j = i + code;
        if (code == 0u || j > len) {
            return FH1_ERR_COBS;
        }
        memmove(&buf[out], &buf[i + 1u], (size_t)code - 1u);
        out += (size_t)code - 1u;
        if (j == len) {
            break;
        }
        if (code != 0xFFu) {
            buf[out++] = 0u; /* the zero this block boundary stands for */
        }
        i = j;
    }
    n = out;
    if (n < FH1_HEADER_LEN + FH1_CRC_LEN) {
        return FH1_ERR_LENGTH;
    }
    crc = fh1_crc16(0xFFFFu, buf, n - FH1_CRC_LEN);
    stored = (uint16_t)(buf[n - 2u] | ((uint16_t)buf[n - 1u] << 8));
    if (crc != stored) {
        return FH1_ERR_CRC;
    }
    if (buf[0] != FH1_VERSION) {
        return FH1_ERR_VERSION;
    }
    pkt->type = buf[1];
    pkt->seq = (uint32_t)buf[2] | ((uint32_t)buf[3] << 8) | ((uint32_t)buf[4] << 16) | ((uint32_t)buf[5] << 24);
    pkt->body = &buf[FH1_HEADER_LEN];
    pkt->body_len = n - FH1_HEADER_LEN - FH1_CRC_LEN;
    return 0;
}

/* --- receiving byte by byte ----------------------------------------------- */

typedef struct {
    uint8_t *buf;     /* caller's buffer, FH1_RX_BUF_SIZE(largest payload) bytes */
    size_t cap;
    size_t len;         /* bytes of the packet so far */
    size_t max_payload; /* the largest payload whose every encoding fits buf */
    uint8_t overflow;   /* the packet outgrew buf: skipped up to the next 0x00 */
} fh1_rx_t;

static inline void fh1_rx_init(fh1_rx_t *rx, uint8_t *buf, size_t cap)
{
    size_t max = cap;
    rx->buf = buf;
    rx->cap = cap;
    rx->len = 0;
    rx->overflow = 0u;
    /* as the host bounds a packet by its max_payload: a packet of zeros
     * encodes to one byte more than itself and could otherwise fit */
    while (max > 0u && FH1_RX_BUF_SIZE(max) > cap) {
        max--;
    }
    rx->max_payload = max;
}

/* One received byte. Returns 1 when it ended a valid packet (pkt holds it
 * until the next call), an FH1_ERR_* code when it ended a rejected one,
 * else 0. */
static inline int fh1_rx_byte(fh1_rx_t *rx, uint8_t byte, fh1_packet_t *pkt)
{
    size_t len;
    if (byte != 0u) {
        if (rx->len < rx->cap) {
            rx->buf[rx->len++] = byte;
        } else {
            rx->overflow = 1u;
        }
        return 0;
    }
    len = rx->len;
    rx->len = 0;
    if (rx->overflow) {
        rx->overflow = 0u;
        return FH1_ERR_LENGTH;
    }
    if (len == 0u) {
        return 0; /* an empty packet: the sender resynchronising */
    }
    {
        int rc = fh1_decode(rx->buf, len, pkt);
        if (rc == 0 && pkt->body_len > rx->max_payload) {
            return FH1_ERR_LENGTH;
        }
        return rc == 0 ? 1 : rc;
    }
}

/* --- acks ------------------------------------------------------------------- */

/* The ack of command cmd_seq, sent with the firmware's own uplink seq; reply
 * may be NULL when len is 0. Returns the bytes to send, 0 if cap is too small. */
static inline size_t fh1_encode_ack(uint8_t *out, size_t cap, uint32_t seq, uint32_t cmd_seq, const void *reply,
                                    size_t len)
{
    fh1_encoder_t e;
    fh1_begin(&e, out, cap, (uint8_t)FH1_TYPE_COMMAND_ACK, seq);
    fh1_write_u32le(&e, cmd_seq);
    if (len) {
        fh1_write(&e, reply, len);
    }
    return fh1_end(&e);
}

#ifdef __cplusplus
}
#endif

#endif /* FH1_COMMAND_H */
