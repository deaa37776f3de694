"""Run-time half of ``_shared.pxd``: the status -> exception mapping and the Python side of the
operation and mode enums that every kernel module shares."""


cdef int check_status(int status, str func, str name="indices") except -1:
    if status == CNN_OK:
        return 0
    if status == CNN_ERR_NOMEM:
        raise MemoryError(f"{func}(): could not allocate the kernel's workspace")
    if status == CNN_ERR_INDEX:
        raise ValueError(
            f"{func}(): every entry of {name} must be a flat position h * W + w inside its "
            f"plane, i.e. in [0, H*W). Received: {name} with an out-of-range value"
        )
    raise RuntimeError(f"{func}(): kernel failed with status {status}")
