/*
 * fileio.h - small file helpers shared by the layers that write files
 * (uploads, fetched images, results).
 */
#ifndef UPRES_CORE_FILEIO_H
#define UPRES_CORE_FILEIO_H

#include <stddef.h>

/*
 * Write all size bytes of data to fd, retrying short writes and EINTR.
 * Returns 0, or -1 with errno set (EIO when write returned 0).
 */
int write_all(int fd, const void *data, size_t size);

#endif
