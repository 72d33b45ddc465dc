#include "shring.h"

void
cw_shr_init(cw_shr_space *s, uint64_t capacity)
{
    s->capacity = capacity;
    s->head = 0;
    s->used = 0;
    s->records = NULL;
    s->rec_cap = 0;
    s->rec_first = 0;
    s->rec_len = 0;
}

void
cw_shr_place(const cw_shr_space *s, uint64_t length, uint64_t *offset,
             uint64_t *cost)
{
    if (length <= s->capacity - s->head) {
        *offset = s->head;
        *cost = length;
    } else {
        *offset = 0;
        *cost = s->capacity - s->head + length;
    }
}

cw_shr_record *
cw_shr_grow(cw_shr_space *s, cw_shr_record *dest, size_t new_cap)
{
    size_t i;
    cw_shr_record *old = s->records;
    for (i = 0; i < s->rec_len; i++) {
        dest[i] = old[(s->rec_first + i) % s->rec_cap];
    }
    s->records = dest;
    s->rec_cap = new_cap;
    s->rec_first = 0;
    return old;
}

void
cw_shr_push(cw_shr_space *s, uint64_t offset, uint64_t length, uint64_t cost)
{
    cw_shr_record *r = &s->records[(s->rec_first + s->rec_len) % s->rec_cap];
    r->offset = offset;
    r->length = length;
    r->cost = cost;
    r->released = 0;
    s->rec_len++;
    s->head = offset + length;
    s->used += cost;
}

int
cw_shr_release(cw_shr_space *s, uint64_t offset, uint64_t length)
{
    size_t i;
    cw_shr_record *r;
    for (i = 0; i < s->rec_len; i++) {
        r = &s->records[(s->rec_first + i) % s->rec_cap];
        if (r->offset == offset && r->length == length && !r->released) {
            r->released = 1;
            break;
        }
    }
    if (i == s->rec_len) {
        return 0;
    }
    while (s->rec_len) {
        r = &s->records[s->rec_first];
        if (!r->released) {
            break;
        }
        s->used -= r->cost;
        s->rec_first = (s->rec_first + 1) % s->rec_cap;
        s->rec_len--;
    }
    return 1;
}

static void
put_le(unsigned char *p, uint64_t v, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static uint64_t
get_le(const unsigned char *p, int n)
{
    int i;
    uint64_t v = 0;
    for (i = n - 1; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

void
cw_shr_desc_put(unsigned char *p, uint32_t ring_id, uint64_t offset,
                uint64_t length)
{
    put_le(p, ring_id, 4);
    put_le(p + 4, offset, 8);
    put_le(p + 12, length, 8);
}

int
cw_shr_desc_get(const unsigned char *p, size_t len, uint32_t ring_id,
                uint64_t capacity, uint32_t *got_id, uint64_t *offset,
                uint64_t *length)
{
    if (len != CW_SHR_DESC_SIZE) {
        return CW_SHR_ERR_SIZE;
    }
    *got_id = (uint32_t)get_le(p, 4);
    *offset = get_le(p + 4, 8);
    *length = get_le(p + 12, 8);
    if (*got_id != ring_id) {
        return CW_SHR_ERR_RING;
    }
    if (*offset >= capacity) {
        return CW_SHR_ERR_OFFSET;
    }
    if (*length == 0) {
        return CW_SHR_ERR_EMPTY;
    }
    if (*length > capacity - *offset) {
        return CW_SHR_ERR_PAST_END;
    }
    return CW_SHR_OK;
}
