# The data pointer of a C-contiguous array for a C kernel, taken through a typed memoryview (which checks the
# dtype and the contiguity) rather than from an address: NULL for None (an output not asked for) or an empty
# array. Declarations only: there is no _arrays module. The arrays must outlive the pointers (the caller holds
# them).
from libc.stdint cimport uint8_t


cdef inline const float *in_f32(a) except? NULL:
    if a is None:
        return NULL
    cdef const float[::1] v = a.reshape(-1)
    return &v[0] if v.shape[0] else NULL


cdef inline float *out_f32(a) except? NULL:
    if a is None:
        return NULL
    cdef float[::1] v = a.reshape(-1)
    return &v[0] if v.shape[0] else NULL


cdef inline const uint8_t *in_u8(a) except? NULL:
    if a is None:
        return NULL
    cdef const uint8_t[::1] v = a.reshape(-1)
    return &v[0] if v.shape[0] else NULL


cdef inline uint8_t *out_u8(a) except? NULL:
    if a is None:
        return NULL
    cdef uint8_t[::1] v = a.reshape(-1)
    return &v[0] if v.shape[0] else NULL
