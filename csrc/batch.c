#include <string.h>

#include "batch.h"

/* Fields of one MuxFrame in buf[pos..end).  As protobuf parses it: the
 * last occurrence of a field wins, unknown fields are skipped.  Stricter:
 * a known field with another wire type, or a kind past 32 bits, fails. */
static int
decode_frame(const unsigned char *buf, size_t pos, size_t end, cw_mux_frame *out,
             cw_frame_error *err)
{
    memset(out, 0, sizeof(*out));
    while (pos < end) {
        size_t tag_pos = pos;
        size_t value_pos;
        uint64_t tag, field, value;
        unsigned wire_type;

        if (cw_read_tag(buf, &pos, end, &tag, err) < 0) {
            return -1;
        }
        field = tag >> 3;
        wire_type = (unsigned)(tag & 7);
        if (field >= 1 && field <= 3) {
            if (wire_type != 0) {
                return cw_fail(err, CW_ERR_WIRE_TYPE, field, wire_type, 0, tag_pos);
            }
            value_pos = pos;
            if (cw_read_varint(buf, &pos, end, &value, err) < 0) {
                return -1;
            }
            if (field == 1) {
                out->stream_id = value;
            } else if (field == 2) {
                if (value > CW_MUX_KIND_MAX) {
                    return cw_fail(err, CW_ERR_KIND_RANGE, value, value_pos, 0, 0);
                }
                out->kind = value;
            } else {
                out->value = value;
            }
        } else if (field == 4) {
            if (wire_type != 2) {
                return cw_fail(err, CW_ERR_WIRE_TYPE, field, wire_type, 2, tag_pos);
            }
            if (cw_read_varint(buf, &pos, end, &value, err) < 0) {
                return -1;
            }
            if (value > end - pos) {
                return cw_fail(err, CW_ERR_LENGTH, value, field, pos, 0);
            }
            out->payload_off = pos;
            out->payload_len = (size_t)value;
            pos += (size_t)value;
        } else if (cw_skip_field(buf, &pos, end, wire_type, field,
                                 /* the frame is one level of nesting */
                                 CW_MAX_GROUP_DEPTH - 1, err) < 0) {
            return -1;
        }
    }
    return 0;
}

int
cw_mux_next(const unsigned char *buf, size_t *pos, size_t end, cw_mux_frame *out,
            cw_frame_error *err)
{
    size_t p = *pos;

    err->code = CW_FRAME_OK;
    while (p < end) {
        size_t tag_pos = p;
        uint64_t tag, field, len;
        unsigned wire_type;

        if (cw_read_tag(buf, &p, end, &tag, err) < 0) {
            return CW_MUX_BATCH_ERROR;
        }
        field = tag >> 3;
        wire_type = (unsigned)(tag & 7);
        if (field != 1) {
            if (cw_skip_field(buf, &p, end, wire_type, field, CW_MAX_GROUP_DEPTH, err) < 0) {
                return CW_MUX_BATCH_ERROR;
            }
            continue;
        }
        if (wire_type != 2) {
            cw_fail(err, CW_ERR_WIRE_TYPE, field, wire_type, 2, tag_pos);
            return CW_MUX_BATCH_ERROR;
        }
        if (cw_read_varint(buf, &p, end, &len, err) < 0) {
            return CW_MUX_BATCH_ERROR;
        }
        if (len > end - p) {
            cw_fail(err, CW_ERR_LENGTH, len, field, p, 0);
            return CW_MUX_BATCH_ERROR;
        }
        if (decode_frame(buf, p, p + (size_t)len, out, err) < 0) {
            return CW_MUX_FRAME_ERROR;
        }
        *pos = p + (size_t)len;
        return CW_MUX_FRAME;
    }
    *pos = p;
    return CW_MUX_END;
}
