/* Fixed-capacity byte ring with a queue of flush boundaries.
 *
 * Plain C99 with no allocation of its own: the caller owns the byte buffer
 * and the boundary array (see cw_ring_replace_marks), so the Python side can
 * use its own allocator and report failures as exceptions.
 */
#ifndef CHUNKWIRE_RING_H
#define CHUNKWIRE_RING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cw_ring {
    unsigned char *buf;
    size_t capacity;
    size_t chunk_size;
    size_t head;         /* ring index of the oldest pending byte */
    size_t pending;      /* bytes written and not yet read */
    uint64_t read_pos;   /* stream offset of the oldest pending byte */
    /* Flush boundaries as stream offsets, strictly increasing, each past
     * read_pos and at most read_pos + pending; a ring of mark_cap entries
     * (0 or a power of two). */
    uint64_t *marks;
    size_t mark_cap;
    size_t mark_head;
    size_t mark_len;
} cw_ring;

/* Reset to empty over buf[0..capacity). */
void cw_ring_init(cw_ring *r, unsigned char *buf, size_t capacity, size_t chunk_size);

/* Copy min(len, free) bytes from data; return how many were taken. */
size_t cw_ring_write(cw_ring *r, const void *data, size_t len);

/* Mark a boundary at the current end of the stream.  Returns 0 when done
 * (including the no-op cases: nothing pending, same position as the last
 * boundary) and 1 when the boundary queue is full: grow it with
 * cw_ring_replace_marks and call again. */
int cw_ring_flush(cw_ring *r);

/* Size to give the boundary queue when cw_ring_flush reports it full. */
size_t cw_ring_marks_next_cap(const cw_ring *r);

/* Move the queued boundaries into marks[0..cap) (cap a power of two, at
 * least mark_len) and return the previous array for the caller to free. */
uint64_t *cw_ring_replace_marks(cw_ring *r, uint64_t *marks, size_t cap);

/* Size of the next chunk, 0 if none is due; *at_flush says whether it ends
 * at a boundary.  With final, a short tail with no boundary is due too. */
size_t cw_ring_next(const cw_ring *r, int final, int *at_flush);

/* Copy the next n bytes to dst and consume them; n and at_flush as returned
 * by cw_ring_next. */
void cw_ring_read(cw_ring *r, void *dst, size_t n, int at_flush);

#ifdef __cplusplus
}
#endif

#endif /* CHUNKWIRE_RING_H */
