/* libFuzzer harness for csrc/frame_io.c, the blocking send/recv loops.
 *
 * frame_io.c is compiled for this harness with its system calls renamed
 * (-Drecv=tf_fuzz_recv -Dsendmsg=tf_fuzz_sendmsg -Dpoll=tf_fuzz_poll
 * -Dclock_gettime=tf_fuzz_clock_gettime), so each one comes here first.  The
 * data still moves through a real non-blocking AF_UNIX socketpair, but the
 * fuzz input decides, call by call, what happens: a short read or write, an
 * EINTR or EAGAIN before anything moves, a hard error, poll() waking ready,
 * early, late (the deadline passes: time is a fake clock, so runs are exact
 * and fast) or failing, the peer writing some bytes, draining, or closing.
 * The hooks are fuzzed too: release() may refuse, interrupted() may stop.
 *
 * Input: a byte b, then 1 + b % 4 operations of 4 bytes each:
 *   kind   bits 0-1: 0 tf_recv_exact (continuing an unfinished one, as a
 *          caller does after an error), 1 tf_recv_some, 2 tf_send_iov,
 *          3 tf_recv_some with n = SIZE_MAX; bit 2: tf_no_hooks instead of
 *          the checking hooks; bits 3-4: deadline none / already passed /
 *          p * 0.25 ms away / past INT_MAX ms away; bit 5: more than
 *          IOV_MAX pieces
 *   u16    size: bytes to receive, or number of iovec pieces to send
 *   p      the deadline's parameter
 * then, for each send, one byte per piece giving its length; then the
 * script: each fake system call and hook takes the next byte (zeros past the
 * end, which mean "go ahead, no fault", so every input terminates).
 *
 * Checked: the hooks' contract from frame_io.h (every call made with the
 * lock released, release/acquire paired around exactly one system call,
 * interrupted() only with the lock held, the lock held on return); the
 * arguments (the fd, the flags, recv's buffer bounds, sendmsg's vector
 * starting at the first unsent piece, at most IOV_MAX pieces, poll's events
 * and a timeout that is the time left rounded up); the status (the first
 * terminal event -- a refusal, a stop, a hard errno, EOF, the clock reading
 * the deadline -- decides it, with io.error the errno of the failing call
 * even though acquire() clobbers errno, and no call at all comes after it);
 * and the bytes: every byte received is the stream's next one, nothing is
 * written past what recv() returned, *done and *got count exactly what
 * moved, the iovec array is advanced in place past exactly *done bytes, and
 * the peer receives the sent bytes intact and in order.
 *
 * Built with -DTF_FUZZ_STRICT=1 it also fails a send that moved every byte
 * yet reports TF_ABORTED: see fuzz/native/README.md. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "frame_io.h"
#include "fuzz_util.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif
#ifndef TF_FUZZ_STRICT
#define TF_FUZZ_STRICT 0
#endif

ssize_t tf_fuzz_recv(int fd, void *buf, size_t len, int flags);
ssize_t tf_fuzz_sendmsg(int fd, const struct msghdr *msg, int flags);
int tf_fuzz_poll(struct pollfd *fds, nfds_t nfds, int timeout);
int tf_fuzz_clock_gettime(clockid_t clk, struct timespec *ts);

enum { OP_RECV_EXACT, OP_RECV_SOME, OP_SEND, OP_RECV_HUGE };

#define MAX_CALLS 200000          /* per operation: a loop that never ends */
#define MAX_SEND ((size_t)1 << 18)

/* The byte at offset i of the stream going one way (dir 0: to us). */
static uint8_t
pattern(uint64_t i, int dir)
{
    return (uint8_t)((i * 2654435761u >> 11) ^ (i >> 9) ^ (uint64_t)(dir * 0x5c));
}

NOT_TRACED static void
fill_pattern(unsigned char *buf, size_t n, uint64_t at, int dir)
{
    for (size_t i = 0; i < n; i++) {
        buf[i] = pattern(at + i, dir);
    }
}

/* Is buf[0 .. n) the stream's bytes from offset at? */
NOT_TRACED static int
is_pattern(const unsigned char *buf, size_t n, uint64_t at, int dir)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != pattern(at + i, dir)) {
            return 0;
        }
    }
    return 1;
}

/* Is buf[0 .. n) all `byte`? */
NOT_TRACED static int
is_all(const unsigned char *buf, size_t n, unsigned char byte)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != byte) {
            return 0;
        }
    }
    return 1;
}

static struct {
    fuzz_input script;
    int sv[2];              /* sv[0]: the fd under test; sv[1]: the peer */
    int64_t now;            /* the fake CLOCK_MONOTONIC */

    /* the operation running */
    int active;
    int kind;
    tf_io *io;
    int hooked;             /* our checking hooks, not tf_no_hooks */
    int locked;
    int in_syscalls;        /* system calls since release() */
    unsigned calls;
    int terminal;           /* something decided the status ... */
    tf_status expect;       /* ... which is this */
    int expect_errno;
    /* receiving */
    unsigned char *rbuf;
    size_t rcap;
    int exact;              /* tf_recv_exact, whose *done is ... */
    size_t *rdone;          /* ... here */
    int huge_n;
    /* sending */
    struct iovec *iov;
    int iovcnt;

    /* the stream to us: the peer pushes pattern(i, 0) bytes */
    uint64_t in_total, in_pushed, in_got;
    int peer_wr_closed;
    /* the stream from us: the peer checks against pattern(i, 1) */
    uint64_t out_sent, out_drained;
    int peer_rd_closed;
} w;

static void
terminal(tf_status st, int err)
{
    REQUIRE(!w.terminal);
    w.terminal = 1;
    w.expect = st;
    w.expect_errno = err;
}

/* Every fake call: the operation is running and nothing has ended it. */
static void
enter(void)
{
    REQUIRE(w.active);
    REQUIRE(!w.terminal);               /* no call after the status is decided */
    REQUIRE(++w.calls < MAX_CALLS);
}

static void
enter_syscall(void)
{
    enter();
    if (w.hooked) {
        REQUIRE(!w.locked);             /* made with the lock released ... */
        REQUIRE(++w.in_syscalls == 1);  /* ... and one call per release */
    }
}

/* --- the peer --------------------------------------------------------------- */

static void
peer_push(size_t amount)
{
    if (w.peer_wr_closed || w.in_pushed == w.in_total) {
        return;
    }
    uint64_t left = w.in_total - w.in_pushed;
    size_t n = amount == 0 || amount > left ? (size_t)left : amount;
    unsigned char buf[4096];
    while (n > 0) {
        size_t k = n < sizeof buf ? n : sizeof buf;
        fill_pattern(buf, k, w.in_pushed, 0);
        ssize_t r = send(w.sv[1], buf, k, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r <= 0) {
            REQUIRE(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
            return;                     /* our receive buffer is full */
        }
        w.in_pushed += (uint64_t)r;
        n -= (size_t)r;
    }
}

static void
peer_close_write(void)
{
    if (!w.peer_wr_closed) {
        REQUIRE(shutdown(w.sv[1], SHUT_WR) == 0);
        w.peer_wr_closed = 1;
    }
}

/* Read what we sent, checking it is the stream's next bytes. */
static void
peer_drain(void)
{
    unsigned char buf[4096];
    for (;;) {
        ssize_t r = recv(w.sv[1], buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0) {
            REQUIRE(w.peer_rd_closed);  /* it shut its reading side */
            return;
        }
        if (r < 0) {
            REQUIRE(errno == EAGAIN || errno == EWOULDBLOCK);
            return;
        }
        REQUIRE(is_pattern(buf, (size_t)r, w.out_drained, 1));
        w.out_drained += (uint64_t)r;
        REQUIRE(w.out_drained <= w.out_sent);
    }
}

static void
peer_close_read(void)
{
    if (!w.peer_rd_closed) {
        peer_drain();
        REQUIRE(shutdown(w.sv[1], SHUT_RD) == 0);
        w.peer_rd_closed = 1;
    }
}

/* --- the fake system calls ---------------------------------------------------- */

ssize_t
tf_fuzz_recv(int fd, void *buf, size_t len, int flags)
{
    enter_syscall();
    REQUIRE(w.kind != OP_SEND);
    REQUIRE(fd == w.sv[0] && flags == 0 && len > 0);
    unsigned char *at = buf;
    REQUIRE(inside(at, 1, w.rbuf, w.rcap));
    size_t room = (size_t)(w.rbuf + w.rcap - at);
    if (w.huge_n) {
        REQUIRE(len == SSIZE_MAX);      /* n = SIZE_MAX, clamped */
    }
    else {
        REQUIRE(len <= room);
    }
    if (w.exact) {
        REQUIRE(same_address(at, w.rbuf + *w.rdone) && len == w.rcap - *w.rdone);
    }
    uint8_t b = take_u8(&w.script);
    if (b & 0x08) {
        peer_push(take_u8(&w.script) * (size_t)8);
    }
    size_t cap = len < room ? len : room;
    switch (b & 7) {
    case 1: errno = EINTR; return -1;
    case 2: errno = EAGAIN; return -1;
    case 3: terminal(TF_ERRNO, ECONNRESET); errno = ECONNRESET; return -1;
    case 4: terminal(TF_ERRNO, ENOTCONN); errno = ENOTCONN; return -1;
    case 5: { size_t lim = 1 + take_u8(&w.script) % 16; cap = cap < lim ? cap : lim; break; }
    case 6: { size_t lim = 1 + take_u8(&w.script) * (size_t)16; cap = cap < lim ? cap : lim; break; }
    default: break;
    }
    ssize_t r = recv(fd, at, cap, MSG_DONTWAIT);
    int err = errno;
    if (r > 0) {
        REQUIRE(is_pattern(at, (size_t)r, w.in_got, 0));
        w.in_got += (uint64_t)r;
    }
    else if (r == 0) {
        REQUIRE(w.peer_wr_closed && w.in_got == w.in_pushed);
        terminal(TF_EOF, 0);
    }
    else {
        REQUIRE(err == EAGAIN || err == EWOULDBLOCK);   /* nothing there yet */
    }
    errno = err;
    return r;
}

ssize_t
tf_fuzz_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    enter_syscall();
    REQUIRE(w.kind == OP_SEND);
    REQUIRE(fd == w.sv[0] && flags == MSG_NOSIGNAL);
    REQUIRE(same_address(msg->msg_name, NULL) && msg->msg_namelen == 0);
    REQUIRE(same_address(msg->msg_control, NULL) && msg->msg_controllen == 0);
    /* The vector starts at the first piece not wholly sent. */
    int first = 0;
    while (first < w.iovcnt && w.iov[first].iov_len == 0) {
        first++;
    }
    REQUIRE(first < w.iovcnt);
    REQUIRE(same_address(msg->msg_iov, &w.iov[first]));
    size_t pieces = (size_t)(w.iovcnt - first);
    REQUIRE(msg->msg_iovlen == (pieces > IOV_MAX ? IOV_MAX : pieces));

    uint8_t b = take_u8(&w.script);
    if (b & 0x08) {
        peer_drain();
    }
    size_t lim = (size_t)-1;
    switch (b & 7) {
    case 1: errno = EINTR; return -1;
    case 2: errno = EAGAIN; return -1;
    case 3: terminal(TF_ERRNO, ECONNRESET); errno = ECONNRESET; return -1;
    case 4: terminal(TF_ERRNO, ENOBUFS); errno = ENOBUFS; return -1;
    case 5: lim = 1 + take_u8(&w.script) % 16; break;
    case 6: lim = 1 + take_u8(&w.script) * (size_t)16; break;
    default: break;
    }
    /* A short write: the same vector cut after lim bytes. */
    struct iovec cut[IOV_MAX];
    size_t n = 0, total = 0;
    for (size_t i = 0; i < msg->msg_iovlen && total < lim; i++) {
        size_t k = msg->msg_iov[i].iov_len;
        k = k < lim - total ? k : lim - total;
        cut[n].iov_base = msg->msg_iov[i].iov_base;
        cut[n].iov_len = k;
        n++;
        total += k;
    }
    struct msghdr m = {0};
    m.msg_iov = cut;
    m.msg_iovlen = n;
    ssize_t r = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    int err = errno;
    if (r > 0) {
        w.out_sent += (uint64_t)r;
    }
    else {
        REQUIRE(r < 0);     /* at least the first piece had a byte */
        if (err != EAGAIN && err != EWOULDBLOCK) {
            REQUIRE(err == EPIPE && w.peer_rd_closed);
            terminal(TF_ERRNO, err);
        }
    }
    errno = err;
    return r;
}

int
tf_fuzz_poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
    enter_syscall();
    int writing = w.kind == OP_SEND;
    REQUIRE(nfds == 1 && fds[0].fd == w.sv[0]);
    REQUIRE(fds[0].events == (writing ? POLLOUT : POLLIN));
    /* The time left, in ms rounded up, capped at INT_MAX; or none. */
    if (w.io->deadline_ns == TF_NO_DEADLINE) {
        REQUIRE(timeout == -1);
    }
    else {
        int64_t left = w.io->deadline_ns - w.now;
        REQUIRE(left > 0);
        int64_t ms = left / 1000000 + (left % 1000000 != 0);
        REQUIRE(timeout == (ms > INT_MAX ? INT_MAX : (int)ms));
    }
    uint8_t b = take_u8(&w.script);
    switch (b & 7) {
    case 1: errno = EINTR; return -1;
    case 2: terminal(TF_ERRNO, ENOMEM); errno = ENOMEM; return -1;
    case 3:
        if (timeout >= 0) {     /* the whole timeout passes */
            w.now += (int64_t)timeout * 1000000;
            return 0;
        }
        break;
    case 4:                     /* an early, spurious wake-up */
        w.now += timeout > 0 ? (int64_t)(take_u8(&w.script) % timeout) * 1000000 : 0;
        return 0;
    case 5:                     /* ready, though nothing changed */
        fds[0].revents = fds[0].events;
        return 1;
    case 6:                     /* the peer hangs up */
        if (writing) {
            peer_close_read();
        }
        else {
            peer_close_write();
        }
        fds[0].revents = POLLHUP;
        return 1;
    case 7:
        if (writing) {
            peer_drain();
        }
        else {
            peer_push(take_u8(&w.script) * (size_t)8);
        }
        fds[0].revents = fds[0].events;
        return 1;
    default:
        break;
    }
    /* The peer does what it takes to make progress. */
    if (writing) {
        peer_drain();
    }
    else if (w.in_pushed < w.in_total && !w.peer_wr_closed) {
        peer_push(0);
    }
    else {
        peer_close_write();
    }
    fds[0].revents = fds[0].events;
    return 1;
}

int
tf_fuzz_clock_gettime(clockid_t clk, struct timespec *ts)
{
    REQUIRE(clk == CLOCK_MONOTONIC);
    if (w.active) {
        enter();
        REQUIRE(w.io->deadline_ns != TF_NO_DEADLINE);   /* read only to wait */
        if (w.now >= w.io->deadline_ns) {
            terminal(TF_TIMEOUT, 0);
        }
    }
    ts->tv_sec = w.now / 1000000000;
    ts->tv_nsec = w.now % 1000000000;
    return 0;
}

/* --- the checking hooks ---------------------------------------------------------- */

static int
hook_release(tf_hooks *hooks)
{
    (void)hooks;
    enter();
    REQUIRE(w.hooked && w.locked);
    if (take_u8(&w.script) % 16 == 15) {        /* the fd is no longer ours */
        terminal(TF_ABORTED, 0);
        return 1;
    }
    w.locked = 0;
    w.in_syscalls = 0;
    return 0;
}

static void
hook_acquire(tf_hooks *hooks)
{
    (void)hooks;
    REQUIRE(w.active && w.hooked);
    REQUIRE(!w.locked && w.in_syscalls == 1);
    w.locked = 1;
    /* Taking a lock may well change errno: the call's must have been saved.
     * (Always the same value: one chosen from errno's old value would make
     * this branch, hence the coverage, depend on what errno was left at
     * after a successful call, which can be anything.) */
    errno = EDOM;
}

static int
hook_interrupted(tf_hooks *hooks)
{
    (void)hooks;
    enter();
    REQUIRE(w.hooked && w.locked);
    if (take_u8(&w.script) % 8 == 7) {          /* a signal handler raised */
        terminal(TF_ABORTED, 0);
        return 1;
    }
    return 0;
}

static tf_hooks checking_hooks = {hook_release, hook_acquire, hook_interrupted};

/* --- the operations ------------------------------------------------------------- */

typedef struct {
    uint8_t kind;
    uint16_t size;
    uint8_t param;
} op_spec;

/* An unfinished tf_recv_exact, continued by the next one. */
static struct {
    int active;
    unsigned char *buf;
    size_t n, done;
    uint64_t at;            /* its stream offset */
} pending;

static void
begin(tf_io *io, int kind, uint8_t flags, uint8_t param)
{
    w.kind = kind;
    w.io = io;
    w.hooked = !(flags & 0x04);
    w.locked = 1;
    w.calls = 0;
    w.terminal = 0;
    w.expect = TF_OK;
    w.expect_errno = 0;
    w.exact = 0;
    w.huge_n = 0;
    io->fd = w.sv[0];
    io->hooks = w.hooked ? &checking_hooks : &tf_no_hooks;
    io->error = 0;
    int64_t now = tf_monotonic_ns();     /* not active yet: not a call to check */
    switch (flags >> 3 & 3) {
    case 0: io->deadline_ns = TF_NO_DEADLINE; break;
    case 1: io->deadline_ns = now - param; break;
    case 2: io->deadline_ns = now + (int64_t)(param + 1) * 250000; break;
    default: io->deadline_ns = now + ((int64_t)INT_MAX + 1 + param) * 1000000; break;
    }
    w.active = 1;
}

static void
end(tf_io *io, tf_status st)
{
    w.active = 0;
    if (w.hooked) {
        REQUIRE(w.locked);              /* returns with the lock held */
    }
    REQUIRE(st == (w.terminal ? w.expect : TF_OK));
    if (st == TF_ERRNO) {
        REQUIRE(io->error == w.expect_errno);
    }
}

static void
do_recv_exact(uint8_t flags, size_t n, uint8_t param)
{
    if (!pending.active) {
        pending.active = 1;
        pending.buf = malloc(n + 1);
        pending.n = n;
        pending.done = 0;
        pending.at = w.in_got;
        memset(pending.buf, 0xCD, n + 1);
    }
    tf_io io;
    begin(&io, OP_RECV_EXACT, flags, param);
    w.rbuf = pending.buf;
    w.rcap = pending.n;
    w.exact = 1;
    w.rdone = &pending.done;
    size_t before = pending.done;
    tf_status st = tf_recv_exact(&io, pending.buf, pending.n, &pending.done);
    end(&io, st);
    REQUIRE(pending.done >= before && pending.done <= pending.n);
    REQUIRE(pending.at + pending.done == w.in_got);     /* counts what moved */
    REQUIRE(is_pattern(pending.buf, pending.done, pending.at, 0));
    REQUIRE(is_all(pending.buf + pending.done, pending.n + 1 - pending.done, 0xCD));
    REQUIRE((st == TF_OK) == (pending.done == pending.n));
    if (st == TF_OK || st == TF_EOF) {
        free(pending.buf);
        pending.active = 0;
    }
}

static void
do_recv_some(uint8_t flags, size_t n, uint8_t param, int huge)
{
    unsigned char *buf = malloc(n + 1);
    memset(buf, 0xCD, n + 1);
    tf_io io;
    begin(&io, huge ? OP_RECV_HUGE : OP_RECV_SOME, flags, param);
    w.rbuf = buf;
    w.rcap = n;
    w.huge_n = huge;
    uint64_t at = w.in_got;
    size_t got = 0;
    tf_status st = tf_recv_some(&io, buf, huge ? (size_t)-1 : n, &got);
    end(&io, st);
    size_t moved = (size_t)(w.in_got - at);
    if (st == TF_OK) {
        REQUIRE(got >= 1 && got <= n && got == moved);
    }
    else if (st == TF_EOF) {
        REQUIRE(got == 0);
    }
    REQUIRE(moved <= n);
    REQUIRE(is_pattern(buf, moved, at, 0));
    REQUIRE(is_all(buf + moved, n + 1 - moved, 0xCD));     /* nothing past it */
    free(buf);
}

static void
do_send(uint8_t flags, size_t pieces, uint8_t param, fuzz_input *in)
{
    int many = flags & 0x20;
    if (many) {
        pieces = IOV_MAX + 1 + pieces % 100;
    }
    else {
        pieces %= 300;
    }
    struct iovec *iov = calloc(pieces + 1, sizeof *iov);
    struct iovec *orig = calloc(pieces + 1, sizeof *orig);
    uint64_t at = w.out_sent;
    size_t total = 0;
    for (size_t i = 0; i < pieces; i++) {
        uint8_t b = take_u8(in);
        size_t len = many ? b % 4 : (b & 0x80 ? (size_t)(b & 0x7f) * 64 : b & 0x7f);
        if (total + len > MAX_SEND) {
            len = 0;
        }
        /* Each piece its own allocation: ASan sees any read past one. */
        unsigned char *p = malloc(len ? len : 1);
        fill_pattern(p, len, at + total, 1);
        iov[i].iov_base = p;
        iov[i].iov_len = len;
        total += len;
    }
    memcpy(orig, iov, pieces * sizeof *iov);

    tf_io io;
    begin(&io, OP_SEND, flags, param);
    w.iov = iov;
    w.iovcnt = (int)pieces;
    size_t done = 0;
    tf_status st = tf_send_iov(&io, iov, (int)pieces, &done);
    end(&io, st);
    REQUIRE(done == w.out_sent - at);
    if (st == TF_OK) {
        REQUIRE(done == total);
    }
    else if (done == total) {
        /* Every byte left, yet the call failed: only interrupted() between
         * the last byte and empty pieces left at the end of the vector can
         * do that (tf_recv_exact does not ask once it is complete).  The
         * strict build calls it a failure: see fuzz/native/README.md. */
        REQUIRE(!TF_FUZZ_STRICT);
        REQUIRE(st == TF_ABORTED && total > 0 && iov[pieces - 1].iov_len == 0);
    }
    /* The array is advanced in place past exactly `done` bytes. */
    size_t left = done;
    for (size_t i = 0; i < pieces; i++) {
        size_t c = left < orig[i].iov_len ? left : orig[i].iov_len;
        REQUIRE(same_address(iov[i].iov_base, (char *)orig[i].iov_base + c));
        REQUIRE(iov[i].iov_len == orig[i].iov_len - c);
        left -= c;
    }
    /* And the peer got those bytes, intact and in order. */
    peer_drain();
    REQUIRE(w.out_drained == w.out_sent);
    for (size_t i = 0; i < pieces; i++) {
        free(orig[i].iov_base);
    }
    free(iov);
    free(orig);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int once;
    if (!once) {
        signal(SIGPIPE, SIG_IGN);
        once = 1;
    }
    fuzz_input in = {data, size, 0};
    op_spec ops[4];
    int nops = 1 + take_u8(&in) % 4;
    uint64_t in_total = 0;
    for (int i = 0; i < nops; i++) {
        ops[i].kind = take_u8(&in);
        ops[i].size = take_u16(&in);
        ops[i].param = take_u8(&in);
        if ((ops[i].kind & 3) != OP_SEND) {
            in_total += ops[i].size + 1u;
        }
    }

    memset(&w, 0, sizeof w);
    w.now = (int64_t)1000000000 * 3600 + 123456789;   /* an hour after boot */
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, w.sv) == 0);
    int small = 4096;           /* small buffers: the kernel's own EAGAIN too */
    for (int i = 0; i < 2; i++) {
        setsockopt(w.sv[i], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        setsockopt(w.sv[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        REQUIRE(fcntl(w.sv[i], F_SETFL, O_NONBLOCK) == 0);
    }
    w.in_total = in_total;

    /* The pieces' lengths come first, then the script is all the rest. */
    size_t lengths_at = in.pos;
    for (int i = 0; i < nops; i++) {
        if ((ops[i].kind & 3) == OP_SEND) {
            in.pos += ops[i].kind & 0x20 ? IOV_MAX + 1 + ops[i].size % 100 : ops[i].size % 300u;
        }
    }
    if (in.pos > size) {
        in.pos = size;
    }
    w.script = (fuzz_input){data, size, in.pos};
    fuzz_input lengths = {data, in.pos, lengths_at};

    for (int i = 0; i < nops; i++) {
        uint8_t kind = ops[i].kind;
        if ((kind & 3) != OP_RECV_EXACT && pending.active) {
            free(pending.buf);          /* the caller gives up on it */
            pending.active = 0;
        }
        switch (kind & 3) {
        case OP_RECV_EXACT: do_recv_exact(kind, ops[i].size, ops[i].param); break;
        case OP_RECV_SOME: do_recv_some(kind, ops[i].size + 1u, ops[i].param, 0); break;
        case OP_SEND: do_send(kind, ops[i].size, ops[i].param, &lengths); break;
        default: do_recv_some(kind, ops[i].size % 4096 + 1u, ops[i].param, 1); break;
        }
    }
    if (pending.active) {
        free(pending.buf);
        pending.active = 0;
    }
    close(w.sv[0]);
    close(w.sv[1]);
    return 0;
}
