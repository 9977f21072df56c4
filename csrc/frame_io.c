#include "frame_io.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#ifndef MSG_NOSIGNAL          /* not on every platform; Python ignores SIGPIPE */
#define MSG_NOSIGNAL 0
#endif
#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

static int go_ahead(tf_hooks *hooks) { (void)hooks; return 0; }
static void no_op(tf_hooks *hooks) { (void)hooks; }
tf_hooks tf_no_hooks = {go_ahead, no_op, go_ahead};

int64_t
tf_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Wait until fd is readable or writable, or the deadline passes.  A ready
 * error or hang-up also counts as ready: the next system call reports it. */
static tf_status
wait_ready(tf_io *io, int writing)
{
    for (;;) {
        int timeout_ms = -1;
        if (io->deadline_ns != TF_NO_DEADLINE) {
            int64_t left = io->deadline_ns - tf_monotonic_ns();
            if (left <= 0) {
                return TF_TIMEOUT;
            }
            /* Round up: waking a little early would just spin once more. */
            int64_t ms = (left + 999999) / 1000000;
            timeout_ms = ms > INT_MAX ? INT_MAX : (int)ms;
        }
        struct pollfd pfd = {io->fd, writing ? POLLOUT : POLLIN, 0};
        if (io->hooks->release(io->hooks)) {
            return TF_ABORTED;
        }
        int r = poll(&pfd, 1, timeout_ms);
        int err = errno;
        io->hooks->acquire(io->hooks);
        if (r > 0) {
            return TF_OK;
        }
        if (r < 0) {
            if (err != EINTR) {
                io->error = err;
                return TF_ERRNO;
            }
            if (io->hooks->interrupted(io->hooks)) {
                return TF_ABORTED;
            }
        }
        /* r == 0 or a handled EINTR: recompute the time left. */
    }
}

typedef struct {
    void *buf;
    size_t len;
    struct msghdr *msg;   /* set for a send */
} op_args;

/* Run one recv or sendmsg until it moves at least one byte (or the peer
 * closes).  The call is tried before polling: on a busy connection data or
 * buffer space is usually there already, and that saves a system call. */
static tf_status
call(tf_io *io, op_args *op, ssize_t *result)
{
    for (;;) {
        if (io->hooks->release(io->hooks)) {
            return TF_ABORTED;
        }
        ssize_t r = op->msg ? sendmsg(io->fd, op->msg, MSG_NOSIGNAL)
                            : recv(io->fd, op->buf, op->len, 0);
        int err = errno;      /* saved before anything can clobber it */
        io->hooks->acquire(io->hooks);
        if (r >= 0) {
            *result = r;
            return TF_OK;
        }
        if (err == EINTR) {
            if (io->hooks->interrupted(io->hooks)) {
                return TF_ABORTED;
            }
            continue;
        }
        if (err != EAGAIN && err != EWOULDBLOCK) {
            io->error = err;
            return TF_ERRNO;
        }
        tf_status st = wait_ready(io, op->msg != NULL);
        if (st != TF_OK) {
            return st;
        }
    }
}

tf_status
tf_recv_some(tf_io *io, void *buf, size_t n, size_t *got)
{
    op_args op = {buf, n > SSIZE_MAX ? SSIZE_MAX : n, NULL};
    ssize_t r;
    tf_status st = call(io, &op, &r);
    if (st != TF_OK) {
        return st;
    }
    *got = (size_t)r;
    return r == 0 ? TF_EOF : TF_OK;
}

/* A signal that lands while a call is moving data does not make it fail with
 * EINTR: the call returns the partial count and the next one may block for
 * good.  So between the pieces of a transfer, give pending handlers their
 * turn (CPython's sock_sendall does the same after each partial write). */
static tf_status
between_pieces(tf_io *io)
{
    return io->hooks->interrupted(io->hooks) ? TF_ABORTED : TF_OK;
}

tf_status
tf_recv_exact(tf_io *io, void *buf, size_t n, size_t *done)
{
    while (*done < n) {
        size_t got;
        tf_status st = tf_recv_some(io, (char *)buf + *done, n - *done, &got);
        if (st != TF_OK) {
            return st;
        }
        *done += got;
        if (*done < n && between_pieces(io) != TF_OK) {
            return TF_ABORTED;
        }
    }
    return TF_OK;
}

tf_status
tf_send_iov(tf_io *io, struct iovec *iov, int iovcnt, size_t *done)
{
    for (;;) {
        /* Skip what is already sent (and empty pieces). */
        while (iovcnt > 0 && iov->iov_len == 0) {
            iov++;
            iovcnt--;
        }
        if (iovcnt == 0) {
            return TF_OK;
        }
        struct msghdr msg = {0};
        msg.msg_iov = iov;
        msg.msg_iovlen = iovcnt > IOV_MAX ? IOV_MAX : iovcnt;
        op_args op = {NULL, 0, &msg};
        ssize_t r;
        tf_status st = call(io, &op, &r);
        if (st != TF_OK) {
            return st;
        }
        *done += (size_t)r;
        /* Advance the vector past the bytes that left. */
        size_t sent = (size_t)r;
        while (sent > 0) {
            size_t step = sent < iov->iov_len ? sent : iov->iov_len;
            iov->iov_base = (char *)iov->iov_base + step;
            iov->iov_len -= step;
            sent -= step;
            if (iov->iov_len == 0) {
                iov++;
                iovcnt--;
            }
        }
        /* Only empty pieces left (an empty frame's payload): all was sent,
         * which must not be reported as cut short. */
        while (iovcnt > 0 && iov->iov_len == 0) {
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0 && between_pieces(io) != TF_OK) {
            return TF_ABORTED;
        }
    }
}
