# C declarations for _core_c.pyx: the ring buffer, frame and batch helpers in csrc/.

from libc.stdint cimport uint32_t, uint64_t


cdef extern from "ring.h" nogil:
    ctypedef struct cw_ring:
        unsigned char *buf
        size_t capacity
        size_t chunk_size
        size_t head
        size_t pending
        uint64_t read_pos
        uint64_t *marks
        size_t mark_cap
        size_t mark_head
        size_t mark_len

    void cw_ring_init(cw_ring *r, unsigned char *buf, size_t capacity, size_t chunk_size)
    size_t cw_ring_write(cw_ring *r, const void *data, size_t len)
    int cw_ring_flush(cw_ring *r)
    size_t cw_ring_marks_next_cap(const cw_ring *r)
    uint64_t *cw_ring_replace_marks(cw_ring *r, uint64_t *marks, size_t cap)
    size_t cw_ring_next(const cw_ring *r, int final, int *at_flush)
    void cw_ring_read(cw_ring *r, void *dst, size_t n, int at_flush)


cdef extern from "frame.h" nogil:
    enum:
        CW_FRAME_OK
        CW_ERR_TRUNCATED_VARINT
        CW_ERR_VARINT_TOO_LONG
        CW_ERR_TAG_RANGE
        CW_ERR_FIELD_ZERO
        CW_ERR_WIRE_TYPE
        CW_ERR_LENGTH
        CW_ERR_TRUNCATED_64
        CW_ERR_TRUNCATED_32
        CW_ERR_GROUP_DEPTH
        CW_ERR_GROUP_MISMATCH
        CW_ERR_END_GROUP
        CW_ERR_BAD_WIRE_TYPE
        CW_ERR_KIND_RANGE
        CW_MAX_VARINT_LEN
        CW_MAX_GROUP_DEPTH

    ctypedef struct cw_frame_error:
        int code
        uint64_t v[4]

    ctypedef struct cw_frame_info:
        size_t body_off
        size_t body_len
        size_t init_count
        size_t init_off
        size_t init_len
        size_t init_total
        int complete
        int flush

    size_t cw_frame_size(size_t body_len, int complete, int flush)
    unsigned char *cw_frame_put_head(unsigned char *p, size_t body_len)
    unsigned char *cw_frame_put_tail(unsigned char *p, int complete, int flush)
    int cw_frame_decode(const unsigned char *buf, size_t len, int with_flush,
                        cw_frame_info *info, unsigned char *init_dest,
                        cw_frame_error *err)


cdef extern from "batch.h" nogil:
    enum:
        CW_MUX_END
        CW_MUX_FRAME
        CW_MUX_BATCH_ERROR
        CW_MUX_FRAME_ERROR

    ctypedef struct cw_mux_frame:
        uint64_t stream_id
        uint64_t kind
        uint64_t value
        size_t payload_off
        size_t payload_len

    size_t cw_mux_frame_size(uint64_t stream_id, uint64_t kind, uint64_t value,
                             size_t payload_len)
    size_t cw_mux_entry_size(size_t frame_size)
    unsigned char *cw_mux_put_head(unsigned char *p, size_t frame_size, uint64_t stream_id,
                                   uint64_t kind, uint64_t value, size_t payload_len)
    int cw_mux_next(const unsigned char *buf, size_t *pos, size_t end,
                    cw_mux_frame *out, cw_frame_error *err)


cdef extern from "shring.h" nogil:
    enum:
        CW_SHR_DESC_SIZE
        CW_SHR_OK
        CW_SHR_ERR_SIZE
        CW_SHR_ERR_RING
        CW_SHR_ERR_OFFSET
        CW_SHR_ERR_EMPTY
        CW_SHR_ERR_PAST_END

    ctypedef struct cw_shr_record:
        uint64_t offset
        uint64_t length
        uint64_t cost
        int released

    ctypedef struct cw_shr_space:
        uint64_t capacity
        uint64_t head
        uint64_t used
        cw_shr_record *records
        size_t rec_cap
        size_t rec_first
        size_t rec_len

    void cw_shr_init(cw_shr_space *s, uint64_t capacity)
    void cw_shr_place(const cw_shr_space *s, uint64_t length, uint64_t *offset, uint64_t *cost)
    cw_shr_record *cw_shr_grow(cw_shr_space *s, cw_shr_record *dest, size_t new_cap)
    void cw_shr_push(cw_shr_space *s, uint64_t offset, uint64_t length, uint64_t cost)
    int cw_shr_release(cw_shr_space *s, uint64_t offset, uint64_t length)
    void cw_shr_desc_put(unsigned char *p, uint32_t ring_id, uint64_t offset, uint64_t length)
    int cw_shr_desc_get(const unsigned char *p, size_t len, uint32_t ring_id, uint64_t capacity,
                        uint32_t *got_id, uint64_t *offset, uint64_t *length)
