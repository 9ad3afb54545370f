/*
 * failwrite.c - an LD_PRELOAD shim that injects write errors: while the file named by
 * SPBE_FAULT_TRIGGER exists, every write and sync of a file whose path ends in
 * SPBE_FAULT_SUFFIX (default "data.mdb") fails with EIO. Everything else passes through.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* 1 when the call on fd is to fail now. */
static int
failing(int fd)
{
    const char *trigger = getenv("SPBE_FAULT_TRIGGER");
    if (!trigger || access(trigger, F_OK) != 0)
        return 0;
    const char *suffix = getenv("SPBE_FAULT_SUFFIX");
    if (!suffix)
        suffix = "data.mdb";
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return 0;
    path[n] = '\0';
    size_t sl = strlen(suffix);
    return (size_t)n >= sl && strcmp(path + n - (ssize_t)sl, suffix) == 0;
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t
write(int fd, const void *buf, size_t count)
{
    if (failing(fd))
        return errno = EIO, -1;
    return NEXT(write)(fd, buf, count);
}

ssize_t
pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    if (failing(fd))
        return errno = EIO, -1;
    return NEXT(pwrite)(fd, buf, count, offset);
}

ssize_t
pwrite64(int fd, const void *buf, size_t count, off_t offset)
{
    if (failing(fd))
        return errno = EIO, -1;
    return NEXT(pwrite64)(fd, buf, count, offset);
}

ssize_t
writev(int fd, const struct iovec *iov, int iovcnt)
{
    if (failing(fd))
        return errno = EIO, -1;
    return NEXT(writev)(fd, iov, iovcnt);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
    if (failing(fd))
        return errno = EIO, -1;
    return NEXT(pwritev)(fd, iov, iovcnt, offset);
}

int
fsync(int fd)
{
    if (failing(fd))
        return errno = EIO, -1;
    return NEXT(fsync)(fd);
}

int
fdatasync(int fd)
{
    if (failing(fd))
        return errno = EIO, -1;
    return NEXT(fdatasync)(fd);
}
