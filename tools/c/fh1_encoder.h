/*
 * fh1_encoder.h - encode firmware-host "fh1" packets on a microcontroller.
 *
 * Header-only, portable C99, no malloc, no stdio. The caller owns the output
 * buffer; the encoder streams COBS straight into it while computing the CRC,
 * so no copy of the packet is ever made (RAM = the output buffer + ~16 bytes
 * of state).
 *
 * Wire format (see the firmware-host design, "fh1"):
 *
 *     COBS(packet) 0x00
 *     packet = version(0x01) type seq(uint32 LE) payload... crc(uint16 LE)
 *     crc    = CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over version..payload
 *
 * One call:
 *
 *     uint8_t out[FH1_ENCODED_MAX(sizeof sample)];
 *     size_t n = fh1_encode(out, sizeof out, 0x01, seq++, &sample, sizeof sample);
 *     if (n) uart_write(out, n);
 *
 * Or piece by piece (no payload buffer needed to assemble a record):
 *
 *     fh1_encoder_t enc;
 *     fh1_begin(&enc, out, sizeof out, 0x01, seq++);
 *     fh1_write(&enc, &ts, sizeof ts);
 *     fh1_write(&enc, accel, sizeof accel);
 *     n = fh1_end(&enc);              (0 if out was too small)
 *
 * Multi-byte fields in the payload are the application's business; the host
 * decodes fh1 payloads as bytes (or by a board's payload schema). To write a
 * field in a declared byte order whatever the MCU's own, use fh1_write_u16le,
 * fh1_write_u32be, fh1_write_f32le and the like below; the header that
 * `firmware-host boards header BOARD` generates is built on them.
 * Types 0xF0-0xFF are reserved for the runtime.
 */
#ifndef FH1_ENCODER_H
#define FH1_ENCODER_H

#include <float.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FH1_VERSION 0x01u
#define FH1_HEADER_LEN 6u /* version, type, seq */
#define FH1_CRC_LEN 2u
#define FH1_TYPE_COMMAND 0xF0u
#define FH1_TYPE_COMMAND_ACK 0xF1u
#define FH1_TYPE_HEARTBEAT 0xF2u
#define FH1_TYPE_LOG 0xF3u

/* Bytes on the wire for a packet of n bytes: COBS adds one code byte per
 * started 254-byte block, plus the 0x00 delimiter. */
#define FH1_COBS_MAX(n) ((n) + (n) / 254u + 1u)
/* Output buffer size that always fits a payload of len bytes. */
#define FH1_ENCODED_MAX(len) (FH1_COBS_MAX((len) + FH1_HEADER_LEN + FH1_CRC_LEN) + 1u)

typedef struct {
    uint8_t *out;     /* caller's buffer */
    size_t cap;       /* its size */
    size_t pos;       /* next free byte */
    size_t code_pos;  /* where the current block's code byte goes */
    uint8_t code;     /* current block length + 1 */
    uint8_t full;     /* the last block closed was a full 254-byte run */
    uint8_t overflow; /* out was too small; fh1_end returns 0 */
    uint16_t crc;
} fh1_encoder_t;

/* CRC-16/CCITT-FALSE, bitwise: 8 shifts per byte, no 512-byte table in flash.
 * Check value: fh1_crc16(0xFFFF, "123456789", 9) == 0x29B1. */
static inline uint16_t fh1_crc16_byte(uint16_t crc, uint8_t byte)
{
    unsigned i;
    crc ^= (uint16_t)((uint16_t)byte << 8);
    for (i = 0; i < 8u; i++) {
        crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

static inline uint16_t fh1_crc16(uint16_t crc, const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *)data;
    while (len--) {
        crc = fh1_crc16_byte(crc, *p++);
    }
    return crc;
}

/* --- streaming COBS into the caller's buffer ---------------------------- */

static inline void fh1__emit(fh1_encoder_t *e, uint8_t byte)
{
    if (e->pos < e->cap) {
        e->out[e->pos] = byte;
    } else {
        e->overflow = 1u;
    }
    e->pos++;
}

static inline void fh1__close_block(fh1_encoder_t *e, uint8_t full)
{
    if (e->code_pos < e->cap) {
        e->out[e->code_pos] = e->code;
    }
    e->code_pos = e->pos;
    fh1__emit(e, 0); /* placeholder for the next block's code byte */
    e->code = 1u;
    e->full = full;
}

/* One packet byte: through the CRC (unless it is a CRC byte) and COBS. */
static inline void fh1__put(fh1_encoder_t *e, uint8_t byte)
{
    if (byte == 0u) {
        fh1__close_block(e, 0u); /* the zero is implied by the block boundary */
    } else {
        fh1__emit(e, byte);
        e->code++;
        if (e->code == 0xFFu) {
            fh1__close_block(e, 1u); /* 254 data bytes: a full block, no implied zero */
        }
    }
}

/* --- packets -------------------------------------------------------------- */

static inline void fh1_begin(fh1_encoder_t *e, uint8_t *out, size_t cap, uint8_t type, uint32_t seq)
{
    uint8_t header[FH1_HEADER_LEN];
    unsigned i;
    e->out = out;
    e->cap = cap;
    e->pos = 0;
    e->code_pos = 0;
    e->code = 1u;
    e->full = 0u;
    e->overflow = 0u;
    e->crc = 0xFFFFu;
    fh1__emit(e, 0); /* the first block's code byte */
    header[0] = (uint8_t)FH1_VERSION;
    header[1] = type;
    header[2] = (uint8_t)(seq & 0xFFu);
    header[3] = (uint8_t)((seq >> 8) & 0xFFu);
    header[4] = (uint8_t)((seq >> 16) & 0xFFu);
    header[5] = (uint8_t)((seq >> 24) & 0xFFu);
    for (i = 0; i < FH1_HEADER_LEN; i++) {
        e->crc = fh1_crc16_byte(e->crc, header[i]);
        fh1__put(e, header[i]);
    }
}

static inline void fh1_write(fh1_encoder_t *e, const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *)data;
    while (len--) {
        e->crc = fh1_crc16_byte(e->crc, *p);
        fh1__put(e, *p++);
    }
}

/* --- fields in a declared byte order --------------------------------------
 * Byte by byte with shifts: the wire is the same whatever the MCU's own
 * endianness and whatever layout its compiler gives a struct. Signed values
 * go through the unsigned type of their width (two's complement bytes). */

static inline void fh1_write_u8(fh1_encoder_t *e, uint8_t v)
{
    fh1_write(e, &v, 1u);
}

static inline void fh1_write_u16le(fh1_encoder_t *e, uint16_t v)
{
    uint8_t b[2];
    b[0] = (uint8_t)(v & 0xFFu);
    b[1] = (uint8_t)(v >> 8);
    fh1_write(e, b, sizeof b);
}

static inline void fh1_write_u16be(fh1_encoder_t *e, uint16_t v)
{
    uint8_t b[2];
    b[0] = (uint8_t)(v >> 8);
    b[1] = (uint8_t)(v & 0xFFu);
    fh1_write(e, b, sizeof b);
}

static inline void fh1_write_u32le(fh1_encoder_t *e, uint32_t v)
{
    uint8_t b[4];
    b[0] = (uint8_t)(v & 0xFFu);
    b[1] = (uint8_t)((v >> 8) & 0xFFu);
    b[2] = (uint8_t)((v >> 16) & 0xFFu);
    b[3] = (uint8_t)(v >> 24);
    fh1_write(e, b, sizeof b);
}

static inline void fh1_write_u32be(fh1_encoder_t *e, uint32_t v)
{
    uint8_t b[4];
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)((v >> 16) & 0xFFu);
    b[2] = (uint8_t)((v >> 8) & 0xFFu);
    b[3] = (uint8_t)(v & 0xFFu);
    fh1_write(e, b, sizeof b);
}

static inline void fh1_write_u64le(fh1_encoder_t *e, uint64_t v)
{
    fh1_write_u32le(e, (uint32_t)(v & 0xFFFFFFFFu));
    fh1_write_u32le(e, (uint32_t)(v >> 32));
}

static inline void fh1_write_u64be(fh1_encoder_t *e, uint64_t v)
{
    fh1_write_u32be(e, (uint32_t)(v >> 32));
    fh1_write_u32be(e, (uint32_t)(v & 0xFFFFFFFFu));
}

/* Floats as their IEEE-754 bits; only where the compiler's float/double is
 * IEEE binary32/binary64 (avr-gcc's default 32-bit double is not: -mdouble=64). */
#if FLT_MANT_DIG == 24
static inline void fh1_write_f32le(fh1_encoder_t *e, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    fh1_write_u32le(e, bits);
}

static inline void fh1_write_f32be(fh1_encoder_t *e, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    fh1_write_u32be(e, bits);
}
#endif

#if DBL_MANT_DIG == 53
static inline void fh1_write_f64le(fh1_encoder_t *e, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    fh1_write_u64le(e, bits);
}

static inline void fh1_write_f64be(fh1_encoder_t *e, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    fh1_write_u64be(e, bits);
}
#endif

/* Appends the CRC and the 0x00 delimiter. Returns the bytes to send, or 0
 * if the buffer was too small (nothing in it is then valid to send). */
static inline size_t fh1_end(fh1_encoder_t *e)
{
    uint16_t crc = e->crc;
    fh1__put(e, (uint8_t)(crc & 0xFFu));
    fh1__put(e, (uint8_t)(crc >> 8));
    if (e->code == 1u && e->full) {
        /* The packet ended exactly on a full block: the minimal encoding has
         * no trailing empty block, so drop its placeholder code byte. */
        e->pos = e->code_pos;
    } else if (e->code_pos < e->cap) {
        e->out[e->code_pos] = e->code;
    }
    fh1__emit(e, 0); /* delimiter */
    return e->overflow ? 0u : e->pos;
}

/* The whole packet in one call; returns the bytes to send, 0 if cap is too small. */
static inline size_t fh1_encode(uint8_t *out, size_t cap, uint8_t type, uint32_t seq,
                                const void *payload, size_t len)
{
    fh1_encoder_t e;
    fh1_begin(&e, out, cap, type, seq);
    fh1_write(&e, payload, len);
    return fh1_end(&e);
}

#ifdef __cplusplus
}
#endif

#endif /* FH1_ENCODER_H */
