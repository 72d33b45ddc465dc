/* Bookkeeping of a shared-memory ring (one direction of a same-host lane)
 * and the codec of its chunk descriptors.
 *
 * Plain C99, no allocation and no system calls: the caller maps the memory
 * and owns the record array (see cw_shr_grow), so the Python side keeps its
 * allocator and reports failures as exceptions.
 *
 * A chunk of n bytes starts at the head, or at 0 when it would pass the end;
 * the bytes skipped count as used until the chunk is released.  Offsets
 * depend only on the lengths written, so the reader can check each
 * descriptor against where the writer had to put the chunk.  Releases come
 * in any order; space comes back in order, oldest chunk first. */
#ifndef CHUNKWIRE_SHRING_H
#define CHUNKWIRE_SHRING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Descriptor: little-endian u32 ring id, u64 offset, u64 length. */
#define CW_SHR_DESC_SIZE 20

#define CW_SHR_OK 0
#define CW_SHR_ERR_SIZE 1     /* not CW_SHR_DESC_SIZE bytes */
#define CW_SHR_ERR_RING 2     /* another ring's id */
#define CW_SHR_ERR_OFFSET 3   /* offset >= capacity */
#define CW_SHR_ERR_EMPTY 4    /* length 0 */
#define CW_SHR_ERR_PAST_END 5 /* offset + length > capacity */

typedef struct cw_shr_record {
    uint64_t offset;
    uint64_t length;
    uint64_t cost;     /* length plus the bytes skipped before it */
    int released;
} cw_shr_record;

typedef struct cw_shr_space {
    uint64_t capacity;
    uint64_t head;     /* where the next chunk starts if it fits before the end */
    uint64_t used;     /* bytes held, skipped bytes included */
    cw_shr_record *records; /* a ring of rec_cap entries, oldest at rec_first */
    size_t rec_cap;
    size_t rec_first;
    size_t rec_len;
} cw_shr_space;

void cw_shr_init(cw_shr_space *s, uint64_t capacity);

/* Where a chunk of length bytes (1..capacity) goes and what it costs. */
void cw_shr_place(const cw_shr_space *s, uint64_t length, uint64_t *offset,
                  uint64_t *cost);

/* Move the records into dest (new_cap > rec_len entries); returns the old
 * array for the caller to free. */
cw_shr_record *cw_shr_grow(cw_shr_space *s, cw_shr_record *dest, size_t new_cap);

/* Record a chunk placed by cw_shr_place; needs rec_len < rec_cap. */
void cw_shr_push(cw_shr_space *s, uint64_t offset, uint64_t length, uint64_t cost);

/* Mark the outstanding chunk (offset, length) released and give back the
 * space of the released chunks at the front.  Returns 1, or 0 when no such
 * chunk is outstanding. */
int cw_shr_release(cw_shr_space *s, uint64_t offset, uint64_t length);

void cw_shr_desc_put(unsigned char *p, uint32_t ring_id, uint64_t offset,
                     uint64_t length);

/* Decode and check a descriptor against a ring; reads only p[0..len).
 * Returns CW_SHR_OK or an error code; *got_id, *offset, *length are set
 * whenever len == CW_SHR_DESC_SIZE, for the error message. */
int cw_shr_desc_get(const unsigned char *p, size_t len, uint32_t ring_id,
                    uint64_t capacity, uint32_t *got_id, uint64_t *offset,
                    uint64_t *length);

#ifdef __cplusplus
}
#endif

#endif /* CHUNKWIRE_SHRING_H */
