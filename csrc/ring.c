#include <string.h>

#include "ring.h"

void
cw_ring_init(cw_ring *r, unsigned char *buf, size_t capacity, size_t chunk_size)
{
    r->buf = buf;
    r->capacity = capacity;
    r->chunk_size = chunk_size;
    r->head = 0;
    r->pending = 0;
    r->read_pos = 0;
    r->mark_head = 0;
    r->mark_len = 0;
}

size_t
cw_ring_write(cw_ring *r, const void *data, size_t len)
{
    size_t room = r->capacity - r->pending;
    size_t n = len < room ? len : room;
    size_t tail, first;

    if (n == 0) {
        return 0;
    }
    tail = r->head + r->pending;
    if (tail >= r->capacity) {
        tail -= r->capacity;
    }
    first = r->capacity - tail;
    if (first > n) {
        first = n;
    }
    memcpy(r->buf + tail, data, first);
    if (first < n) {
        memcpy(r->buf, (const unsigned char *)data + first, n - first);
    }
    r->pending += n;
    return n;
}

int
cw_ring_flush(cw_ring *r)
{
    uint64_t end;

    if (r->pending == 0) {
        return 0;
    }
    end = r->read_pos + r->pending;
    if (r->mark_len != 0) {
        size_t last = (r->mark_head + r->mark_len - 1) & (r->mark_cap - 1);
        if (r->marks[last] == end) {
            return 0;
        }
    }
    if (r->mark_len == r->mark_cap) {
        return 1;
    }
    r->marks[(r->mark_head + r->mark_len) & (r->mark_cap - 1)] = end;
    r->mark_len++;
    return 0;
}

size_t
cw_ring_marks_next_cap(const cw_ring *r)
{
    return r->mark_cap ? r->mark_cap * 2 : 8;
}

uint64_t *
cw_ring_replace_marks(cw_ring *r, uint64_t *marks, size_t cap)
{
    uint64_t *old = r->marks;
    size_t i;

    for (i = 0; i < r->mark_len; i++) {
        marks[i] = old[(r->mark_head + i) & (r->mark_cap - 1)];
    }
    r->marks = marks;
    r->mark_cap = cap;
    r->mark_head = 0;
    return old;
}

size_t
cw_ring_next(const cw_ring *r, int final, int *at_flush)
{
    *at_flush = 0;
    if (r->mark_len != 0) {
        uint64_t distance = r->marks[r->mark_head] - r->read_pos;
        if (distance <= r->chunk_size) {
            *at_flush = 1;
            return (size_t)distance;
        }
        return r->chunk_size;
    }
    if (r->pending >= r->chunk_size) {
        return r->chunk_size;
    }
    return final ? r->pending : 0;
}

void
cw_ring_read(cw_ring *r, void *dst, size_t n, int at_flush)
{
    size_t first = r->capacity - r->head;

    if (first > n) {
        first = n;
    }
    memcpy(dst, r->buf + r->head, first);
    if (first < n) {
        memcpy((unsigned char *)dst + first, r->buf, n - first);
    }
    r->pending -= n;
    r->read_pos += n;
    if (r->pending == 0) {
        /* Start over at the front so later copies are less often split. */
        r->head = 0;
    } else {
        r->head += n;
        if (r->head >= r->capacity) {
            r->head -= r->capacity;
        }
    }
    if (at_flush) {
        r->mark_head = (r->mark_head + 1) & (r->mark_cap - 1);
        r->mark_len--;
    }
}
