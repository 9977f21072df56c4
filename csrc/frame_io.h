/* Blocking socket loops with one deadline for the whole call.  Plain C, no
 * Python: the caller injects its locking and signal policy through tf_hooks,
 * which is how the binding releases the GIL around each system call and runs
 * Python signal handlers on EINTR (the shape of CPython's sock_call_ex).
 *
 * Contract: every function here is entered with the caller's "lock" held and
 * returns with it held; hooks->release/acquire bracket only poll() and the
 * send/recv system call itself, and release() may refuse (TF_ABORTED). */
#ifndef TCPFRAME_FRAME_IO_H
#define TCPFRAME_FRAME_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct tf_hooks tf_hooks;
struct tf_hooks {
    /* Before each system call, with the lock held: nonzero means the fd is
     * no longer the caller's (closed meanwhile; its number may now be
     * another socket's), so the call is not made and the transfer stops
     * with TF_ABORTED.  Zero means go ahead: the lock is now released. */
    int (*release)(tf_hooks *hooks);
    void (*acquire)(tf_hooks *hooks);     /* right after the system call */
    /* After EINTR, and between the pieces of a transfer, with the lock held:
     * nonzero stops the transfer (a signal handler raised), zero goes on. */
    int (*interrupted)(tf_hooks *hooks);
};

/* Hooks that do nothing and always retry on EINTR: for plain-C callers. */
extern tf_hooks tf_no_hooks;

typedef enum {
    TF_OK = 0,
    TF_EOF,        /* the peer closed its side: recv() returned 0 */
    TF_TIMEOUT,    /* the deadline passed (at once, for a non-blocking socket) */
    TF_ERRNO,      /* a system call failed; the errno is in tf_io.error */
    TF_ABORTED,    /* hooks->interrupted() or hooks->release() asked to stop */
} tf_status;

#define TF_NO_DEADLINE ((int64_t)-1)

typedef struct {
    int fd;
    int64_t deadline_ns;   /* tf_monotonic_ns() time, or TF_NO_DEADLINE */
    tf_hooks *hooks;
    int error;             /* errno saved right after the failing call */
} tf_io;

/* CLOCK_MONOTONIC in nanoseconds: deadlines must not move with wall time. */
int64_t tf_monotonic_ns(void);

/* Fill buf[*done .. n), advancing *done as bytes arrive, so that on any
 * status but TF_OK the caller still knows exactly what was received. */
tf_status tf_recv_exact(tf_io *io, void *buf, size_t n, size_t *done);

/* One recv() of at most n bytes (n > 0), waiting if nothing is there yet. */
tf_status tf_recv_some(tf_io *io, void *buf, size_t n, size_t *got);

/* Send every byte of iov[0 .. iovcnt) with as few sendmsg() calls as the
 * kernel allows: a frame's header and payload leave in one call, so Nagle's
 * algorithm never holds back a second small write.  iov is advanced in place
 * past what was sent; *done counts the bytes sent. */
tf_status tf_send_iov(tf_io *io, struct iovec *iov, int iovcnt, size_t *done);

#endif
