/* Protobuf wire helpers for the multiplexed connection's messages:
 *   MuxBatch { repeated MuxFrame frames = 1; }
 *   MuxFrame { uint64 stream_id = 1; FrameKind kind = 2; uint64 value = 3;
 *              bytes payload = 4; }
 * Encoding omits zero and empty fields, as protobuf does in proto3; every
 * frame of a batch is written, even an empty one.  Plain C99. */
#ifndef CHUNKWIRE_BATCH_H
#define CHUNKWIRE_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CW_TAG_MUX_FRAME 0x0A   /* MuxBatch field 1, length-delimited */
#define CW_TAG_MUX_STREAM 0x08  /* MuxFrame field 1, varint */
#define CW_TAG_MUX_KIND 0x10    /* MuxFrame field 2, varint */
#define CW_TAG_MUX_VALUE 0x18   /* MuxFrame field 3, varint */
#define CW_TAG_MUX_PAYLOAD 0x22 /* MuxFrame field 4, length-delimited */
#define CW_MUX_KIND_MAX 0xFFFFFFFFu

/* Size of a MuxFrame message, without the tag and length that nest it. */
static CW_INLINE size_t
cw_mux_frame_size(uint64_t stream_id, uint64_t kind, uint64_t value,
                  size_t payload_len)
{
    size_t n = 0;
    if (stream_id) {
        n += 1 + cw_varint_size(stream_id);
    }
    if (kind) {
        n += 1 + cw_varint_size(kind);
    }
    if (value) {
        n += 1 + cw_varint_size(value);
    }
    if (payload_len) {
        n += 1 + cw_varint_size(payload_len) + payload_len;
    }
    return n;
}

/* Size of a frame of frame_size bytes as an entry of the batch. */
static CW_INLINE size_t
cw_mux_entry_size(size_t frame_size)
{
    return 1 + cw_varint_size(frame_size) + frame_size;
}

/* Write a batch entry up to its payload bytes and return where they go;
 * frame_size is cw_mux_frame_size() of the same values. */
static CW_INLINE unsigned char *
cw_mux_put_head(unsigned char *p, size_t frame_size, uint64_t stream_id,
                uint64_t kind, uint64_t value, size_t payload_len)
{
    *p++ = CW_TAG_MUX_FRAME;
    p = cw_varint_put(p, frame_size);
    if (stream_id) {
        *p++ = CW_TAG_MUX_STREAM;
        p = cw_varint_put(p, stream_id);
    }
    if (kind) {
        *p++ = CW_TAG_MUX_KIND;
        p = cw_varint_put(p, kind);
    }
    if (value) {
        *p++ = CW_TAG_MUX_VALUE;
        p = cw_varint_put(p, value);
    }
    if (payload_len) {
        *p++ = CW_TAG_MUX_PAYLOAD;
        p = cw_varint_put(p, payload_len);
    }
    return p;
}

typedef struct cw_mux_frame {
    uint64_t stream_id;
    uint64_t kind;       /* at most CW_MUX_KIND_MAX */
    uint64_t value;
    size_t payload_off;  /* last payload wins; 0/0 when absent */
    size_t payload_len;
} cw_mux_frame;

#define CW_MUX_END 0
#define CW_MUX_FRAME 1
#define CW_MUX_BATCH_ERROR (-1) /* in the batch's own fields */
#define CW_MUX_FRAME_ERROR (-2) /* inside the frame being read */

/* Read the next frame of a MuxBatch from buf[*pos..end), skipping unknown
 * fields.  Returns CW_MUX_FRAME with *out filled and *pos past the frame,
 * CW_MUX_END at the end, or an error code with *err filled.  Offsets in
 * *out and *err are indexes into buf.  Never reads outside buf[*pos..end). */
int cw_mux_next(const unsigned char *buf, size_t *pos, size_t end,
                cw_mux_frame *out, cw_frame_error *err);

#ifdef __cplusplus
}
#endif

#endif /* CHUNKWIRE_BATCH_H */
