/* Protobuf wire helpers for the body messages ServeHTTPRequest and
 * ServeHTTPResponse: field 1 init (bytes), 2 body_chunk (bytes),
 * 3 body_complete (bool), 4 flush (bool, responses only).  Plain C99. */
#ifndef CHUNKWIRE_FRAME_H
#define CHUNKWIRE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_MSC_VER) && !defined(__cplusplus)
#define CW_INLINE __inline
#else
#define CW_INLINE inline
#endif

#define CW_TAG_BODY 0x12     /* field 2, length-delimited */
#define CW_TAG_COMPLETE 0x18 /* field 3, varint */
#define CW_TAG_FLUSH 0x20    /* field 4, varint */
#define CW_MAX_VARINT_LEN 10
#define CW_MAX_GROUP_DEPTH 100

static CW_INLINE size_t
cw_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v > 0x7F) {
        v >>= 7;
        n++;
    }
    return n;
}

static CW_INLINE unsigned char *
cw_varint_put(unsigned char *p, uint64_t v)
{
    while (v > 0x7F) {
        *p++ = (unsigned char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

/* Encoded size of a body message; the body field is omitted when empty, as
 * protobuf does for a proto3 scalar at its default. */
static CW_INLINE size_t
cw_frame_size(size_t body_len, int complete, int flush)
{
    size_t n = 0;
    if (body_len) {
        n += 1 + cw_varint_size(body_len) + body_len;
    }
    if (complete) {
        n += 2;
    }
    if (flush) {
        n += 2;
    }
    return n;
}

/* Write the body tag and length (nothing when body_len is 0). */
static CW_INLINE unsigned char *
cw_frame_put_head(unsigned char *p, size_t body_len)
{
    if (body_len) {
        *p++ = CW_TAG_BODY;
        p = cw_varint_put(p, body_len);
    }
    return p;
}

/* Write the flag fields that follow the body. */
static CW_INLINE unsigned char *
cw_frame_put_tail(unsigned char *p, int complete, int flush)
{
    if (complete) {
        *p++ = CW_TAG_COMPLETE;
        *p++ = 1;
    }
    if (flush) {
        *p++ = CW_TAG_FLUSH;
        *p++ = 1;
    }
    return p;
}

/* Decoding errors; v[] holds the numbers the message needs, in order. */
enum {
    CW_FRAME_OK = 0,
    CW_ERR_TRUNCATED_VARINT,  /* v0 offset */
    CW_ERR_VARINT_TOO_LONG,   /* v0 offset */
    CW_ERR_TAG_RANGE,         /* v0 offset */
    CW_ERR_FIELD_ZERO,        /* v0 offset */
    CW_ERR_WIRE_TYPE,         /* v0 field, v1 wire type, v2 expected, v3 offset */
    CW_ERR_LENGTH,            /* v0 length, v1 field, v2 offset */
    CW_ERR_TRUNCATED_64,      /* v0 field, v1 offset */
    CW_ERR_TRUNCATED_32,      /* v0 field, v1 offset */
    CW_ERR_GROUP_DEPTH,       /* v0 depth limit */
    CW_ERR_GROUP_MISMATCH,    /* v0 end field, v1 offset, v2 open field */
    CW_ERR_END_GROUP,         /* v0 field */
    CW_ERR_BAD_WIRE_TYPE,     /* v0 wire type, v1 field */
    CW_ERR_KIND_RANGE         /* v0 kind, v1 offset (batches only) */
};

typedef struct cw_frame_error {
    int code;
    uint64_t v[4];
} cw_frame_error;

typedef struct cw_frame_info {
    size_t body_off;    /* last body_chunk wins; 0/0 when absent */
    size_t body_len;
    size_t init_count;  /* occurrences of field 1 */
    size_t init_off;    /* the first one */
    size_t init_len;
    size_t init_total;  /* summed lengths: repeated occurrences concatenate */
    int complete;
    int flush;
} cw_frame_info;

/* Wire primitives, shared with the batch codec.  Each reads from buf[*pos]
 * up to end, advances *pos past what it read and returns 0, or returns -1
 * with *err filled (offsets in err are indexes into buf).  Never reads
 * outside buf[*pos..end). */
int cw_fail(cw_frame_error *err, int code, uint64_t a, uint64_t b, uint64_t c,
            uint64_t d);
int cw_read_varint(const unsigned char *buf, size_t *pos, size_t end,
                   uint64_t *out, cw_frame_error *err);
/* A tag: at most 32 bits, field number not 0. */
int cw_read_tag(const unsigned char *buf, size_t *pos, size_t end,
                uint64_t *tag, cw_frame_error *err);
/* Skip the value of a field whose tag was just read, groups included
 * (iteratively; at most max_depth nested, capped at CW_MAX_GROUP_DEPTH). */
int cw_skip_field(const unsigned char *buf, size_t *pos, size_t end,
                  unsigned wire_type, uint64_t field, size_t max_depth,
                  cw_frame_error *err);

/* Parse a body message of len bytes.  with_flush selects ServeHTTPResponse
 * (field 4 is the flush flag) over ServeHTTPRequest (field 4 unknown).
 * When init_dest is not NULL it receives the concatenated init fields
 * (info->init_total bytes, as a previous call reported).  Returns 0, or -1
 * with *err filled.  Never reads outside buf[0..len). */
int cw_frame_decode(const unsigned char *buf, size_t len, int with_flush,
                    cw_frame_info *info, unsigned char *init_dest,
                    cw_frame_error *err);

#ifdef __cplusplus
}
#endif

#endif /* CHUNKWIRE_FRAME_H */
