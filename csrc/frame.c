#include <string.h>

#include "frame.h"

int
cw_fail(cw_frame_error *err, int code, uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    err->code = code;
    err->v[0] = a;
    err->v[1] = b;
    err->v[2] = c;
    err->v[3] = d;
    return -1;
}

int
cw_read_varint(const unsigned char *buf, size_t *pos, size_t end, uint64_t *out,
            cw_frame_error *err)
{
    size_t p = *pos;
    uint64_t result = 0;
    unsigned shift = 0;
    int i;

    for (i = 0; i < CW_MAX_VARINT_LEN; i++) {
        unsigned char byte;
        if (p >= end) {
            return cw_fail(err, CW_ERR_TRUNCATED_VARINT, p, 0, 0, 0);
        }
        byte = buf[p++];
        /* Bits past 64 fall off, as with protobuf's own parsers. */
        result |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            *out = result;
            *pos = p;
            return 0;
        }
        shift += 7;
    }
    return cw_fail(err, CW_ERR_VARINT_TOO_LONG, p - CW_MAX_VARINT_LEN, 0, 0, 0);
}

int
cw_read_tag(const unsigned char *buf, size_t *pos, size_t end, uint64_t *tag,
         cw_frame_error *err)
{
    size_t start = *pos;

    if (cw_read_varint(buf, pos, end, tag, err) < 0) {
        return -1;
    }
    if (*tag > 0xFFFFFFFFu) {
        return cw_fail(err, CW_ERR_TAG_RANGE, start, 0, 0, 0);
    }
    if ((*tag >> 3) == 0) {
        return cw_fail(err, CW_ERR_FIELD_ZERO, start, 0, 0, 0);
    }
    return 0;
}

int
cw_skip_field(const unsigned char *buf, size_t *pos, size_t end, unsigned wire_type,
              uint64_t field, size_t max_depth, cw_frame_error *err)
{
    uint64_t open[CW_MAX_GROUP_DEPTH];
    size_t depth = 0;
    size_t p = *pos;
    uint64_t value;

    if (max_depth > CW_MAX_GROUP_DEPTH) {
        max_depth = CW_MAX_GROUP_DEPTH;
    }
    for (;;) {
        switch (wire_type) {
        case 0:
            if (cw_read_varint(buf, &p, end, &value, err) < 0) {
                return -1;
            }
            break;
        case 1:
            if (end - p < 8) {
                return cw_fail(err, CW_ERR_TRUNCATED_64, field, p, 0, 0);
            }
            p += 8;
            break;
        case 5:
            if (end - p < 4) {
                return cw_fail(err, CW_ERR_TRUNCATED_32, field, p, 0, 0);
            }
            p += 4;
            break;
        case 2:
            if (cw_read_varint(buf, &p, end, &value, err) < 0) {
                return -1;
            }
            if (value > end - p) {
                return cw_fail(err, CW_ERR_LENGTH, value, field, p, 0);
            }
            p += (size_t)value;
            break;
        case 3:
            if (depth >= max_depth) {
                return cw_fail(err, CW_ERR_GROUP_DEPTH, max_depth, 0, 0, 0);
            }
            open[depth++] = field;
            break;
        case 4:
            /* Only reached for a field outside any group: inside one, an
             * end-group tag is handled below. */
            return cw_fail(err, CW_ERR_END_GROUP, field, 0, 0, 0);
        default:
            return cw_fail(err, CW_ERR_BAD_WIRE_TYPE, wire_type, field, 0, 0);
        }
        /* Inside a group: read tags until one that is not an end-group. */
        for (;;) {
            size_t tag_pos;
            uint64_t tag;
            if (depth == 0) {
                *pos = p;
                return 0;
            }
            tag_pos = p;
            if (cw_read_tag(buf, &p, end, &tag, err) < 0) {
                return -1;
            }
            field = tag >> 3;
            wire_type = (unsigned)(tag & 7);
            if (wire_type != 4) {
                break;
            }
            if (field != open[depth - 1]) {
                return cw_fail(err, CW_ERR_GROUP_MISMATCH, field, tag_pos, open[depth - 1], 0);
            }
            depth--;
        }
    }
}

int
cw_frame_decode(const unsigned char *buf, size_t len, int with_flush,
                cw_frame_info *info, unsigned char *init_dest,
                cw_frame_error *err)
{
    size_t pos = 0;
    size_t end = len;

    memset(info, 0, sizeof(*info));
    err->code = CW_FRAME_OK;
    while (pos < end) {
        size_t tag_pos = pos;
        uint64_t tag, field, value;
        unsigned wire_type;

        if (cw_read_tag(buf, &pos, end, &tag, err) < 0) {
            return -1;
        }
        field = tag >> 3;
        wire_type = (unsigned)(tag & 7);
        if (field == 1 || field == 2) {
            if (wire_type != 2) {
                return cw_fail(err, CW_ERR_WIRE_TYPE, field, wire_type, 2, tag_pos);
            }
            if (cw_read_varint(buf, &pos, end, &value, err) < 0) {
                return -1;
            }
            if (value > end - pos) {
                return cw_fail(err, CW_ERR_LENGTH, value, field, pos, 0);
            }
            if (field == 1) {
                if (info->init_count == 0) {
                    info->init_off = pos;
                    info->init_len = (size_t)value;
                }
                if (init_dest != NULL) {
                    memcpy(init_dest + info->init_total, buf + pos, (size_t)value);
                }
                info->init_count++;
                info->init_total += (size_t)value;
            } else {
                info->body_off = pos;
                info->body_len = (size_t)value;
            }
            pos += (size_t)value;
        } else if (field == 3 || (field == 4 && with_flush)) {
            if (wire_type != 0) {
                return cw_fail(err, CW_ERR_WIRE_TYPE, field, wire_type, 0, tag_pos);
            }
            if (cw_read_varint(buf, &pos, end, &value, err) < 0) {
                return -1;
            }
            if (field == 3) {
                info->complete = value != 0;
            } else {
                info->flush = value != 0;
            }
        } else if (cw_skip_field(buf, &pos, end, wire_type, field, CW_MAX_GROUP_DEPTH, err) < 0) {
            return -1;
        }
    }
    return 0;
}
