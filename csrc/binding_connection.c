/* tcpframe.Connection: a socket plus a receive buffer (frame_decoder.c) and,
 * optionally, a write buffer (frame_outbuf.c).
 *
 * One recv() may carry many frames, so a stream of small frames costs one
 * system call per batch rather than two per frame; a large payload is
 * received straight into its bytes object, never through the buffer; and
 * send_many() puts many frames in one vectored call.  A Connection never
 * loses received bytes: after a timeout or a signal they stay buffered (and
 * are reported in .partial), and the next read carries on from them.
 *
 * With write_buffer=N, sends collect whole frames in N bytes that leave in
 * one call: when the next frame would not fit, on flush(), on close(), and
 * before any read touches the socket -- so a request is on the wire before
 * its answer is waited for.  Every send that does touch the socket sends
 * what is waiting first, in the same vectored call (a frame sent after a
 * flush never sits behind it waiting for Nagle).  What a failed send did not
 * move stays waiting, so it can still be finished without sending a byte
 * twice.
 *
 * Threads and re-entrancy, as io.BufferedReader/Writer do it: one lock per
 * direction, so one thread may read while another sends; a second reader
 * (or sender) waits for the first; the same thread coming back in (a signal
 * handler, a wrapped socket's recv_into) gets RuntimeError.  The decoder is
 * touched only by the holder of the read lock, the write buffer only by the
 * holder of the send lock (or, to append, under the GIL while nobody holds
 * it).  A read that must send what is waiting takes the send lock too --
 * read lock first, send lock second, and the second only if it is free: a
 * sender never waits for the read lock, and a read never waits for a send.
 * A send in progress needs no help: while a read is in progress, senders
 * send everything waiting rather than append to it (see wants_direct).
 * close() never frees what a call in progress uses: it wakes such calls
 * (shutdown) and leaves closing the socket -- and so releasing its file
 * descriptor number for reuse -- to the last of them. */
#include "binding_types.h"

#include <string.h>
#include <sys/socket.h>

#include "frame_decoder.h"
#include "frame_outbuf.h"
#include "pythread.h"

/* Read-ahead per recv(): many small frames per system call. */
#define READ_CHUNK ((size_t)1 << 16)
/* Payloads at least this big bypass the buffer: received in place. */
#define DIRECT_MIN ((size_t)1 << 16)
/* send_many() copies payloads up to this size next to their headers (one
 * iovec for many frames); larger ones get an iovec of their own. */
#define COPY_MAX ((Py_ssize_t)1024)
/* Frames per sendmsg() in send_many(): two iovecs each, under IOV_MAX. */
#define BATCH 500

typedef struct {
    PyThread_type_lock lock;
    unsigned long owner;     /* the thread inside the call, 0 when none */
    const char *doing;       /* "reading" / "sending", for the error */
} call_lock;

typedef struct {
    PyObject_HEAD
    PyObject *sock;          /* owned until the socket is really closed */
    module_state *st;        /* alive as long as our type, which we hold */
    Py_ssize_t max_size;
    tf_decoder dec;
    tf_outbuf out;           /* frames waiting to be sent; capacity 0: none */
    call_lock reading, sending;
    int users;               /* calls between enter() and leave() */
    int closed;              /* close() was called */
    int waking;              /* close() is in wake_users(): a wrapped socket's
                                shutdown() calling close() again does nothing */
} Connection;

int
is_connection(module_state *st, PyObject *obj)
{
    return PyObject_TypeCheck(obj, (PyTypeObject *)st->ConnectionType);
}

/* ------------------------------------------------- entering and leaving */

static void
raise_closed(const char *method)
{
    PyErr_Format(PyExc_ValueError, "I/O operation on a closed Connection (%s())", method);
}

/* The close() that happened during a call is why it failed: say so, with
 * what the socket reported (EOF, EPIPE...) as the cause. */
static void
raise_closed_during(const char *method)
{
    PyObject *cause = take_exception();
    PyErr_Format(PyExc_ValueError,
                 "Connection.%s() was cut short: the Connection was closed (close() "
                 "called from another thread or a signal handler) while it was in progress",
                 method);
    if (cause != NULL) {
        PyObject *exc = take_exception();
        /* A buffered send's progress, from the error that cut it: the caller
         * must learn how much left, whichever exception it catches. */
        static const char *const progress[] = {"sent", "frames_sent"};
        for (size_t i = 0; i < sizeof progress / sizeof progress[0]; i++) {
            PyObject *v = PyObject_GetAttrString(cause, progress[i]);
            if (v == NULL || PyObject_SetAttrString(exc, progress[i], v) < 0) {
                PyErr_Clear();
            }
            Py_XDECREF(v);
        }
        PyException_SetCause(exc, cause);
        put_exception(exc);
    }
}

/* Close the socket for real: no call is using it any more. */
static int
finish_close(Connection *c)
{
    tf_decoder_free(&c->dec);
    tf_outbuf_free(&c->out);
    PyObject *sock = c->sock;
    if (sock == NULL) {
        return 0;
    }
    c->sock = NULL;
    PyObject *r = PyObject_CallMethod(sock, "close", NULL);
    Py_DECREF(sock);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* Wake the calls blocked on the socket: they see EOF or EPIPE and leave.
 * The caller counts itself as a user meanwhile, so that no call leaving
 * during the Python code below (an overridden fileno()) closes the socket
 * and frees its fd number before shutdown() reaches it.  Errors from
 * shutdown (ENOTCONN: nothing to wake) do not matter; others propagate. */
static int
wake_users(Connection *c)
{
    PyObject *sock = Py_NewRef(c->sock);
    if (PyObject_TypeCheck(sock, (PyTypeObject *)c->st->socket_type)) {
        PyObject *fd = PyObject_CallMethod(sock, "fileno", NULL);
        long v = fd == NULL ? -1 : PyLong_AsLong(fd);
        Py_XDECREF(fd);
        if (v >= 0) {
            shutdown((int)v, SHUT_RDWR);
        }
    }
    else {
        PyObject *r = PyObject_CallMethod(sock, "shutdown", "i", SHUT_RDWR);
        Py_XDECREF(r);
    }
    Py_DECREF(sock);
    if (PyErr_Occurred() && (PyErr_ExceptionMatches(PyExc_OSError) ||
                             PyErr_ExceptionMatches(PyExc_AttributeError))) {
        PyErr_Clear();
    }
    return PyErr_Occurred() ? -1 : 0;
}

static int
enter(Connection *c, call_lock *l, const char *method)
{
    if (c->closed) {
        raise_closed(method);
        return -1;
    }
    unsigned long me = PyThread_get_thread_ident();
    if (l->owner == me) {
        PyErr_Format(PyExc_RuntimeError,
                     "reentrant call inside Connection.%s(): this thread is already %s on "
                     "this Connection (a signal handler or a socket method called back "
                     "into it); use another Connection, or do it after the call returns",
                     method, l->doing);
        return -1;
    }
    if (!PyThread_acquire_lock(l->lock, NOWAIT_LOCK)) {
        /* Another thread is inside: wait for it without the GIL, running
         * signal handlers (Ctrl-C) as they come. */
        for (;;) {
            PyLockStatus r;
            Py_BEGIN_ALLOW_THREADS
            r = PyThread_acquire_lock_timed(l->lock, -1, 1);
            Py_END_ALLOW_THREADS
            if (r == PY_LOCK_ACQUIRED) {
                break;
            }
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
        }
    }
    if (c->closed) {        /* closed while we waited */
        PyThread_release_lock(l->lock);
        raise_closed(method);
        return -1;
    }
    l->owner = me;
    c->users++;
    return 0;
}

static PyObject *
leave(Connection *c, call_lock *l, PyObject *result, const char *method)
{
    l->owner = 0;
    PyThread_release_lock(l->lock);
    c->users--;
    if (!c->closed) {
        return result;
    }
    if (result == NULL && PyErr_ExceptionMatches(PyExc_OSError)) {
        raise_closed_during(method);
    }
    if (c->users == 0) {
        PyObject *pending = take_exception();
        if (finish_close(c) < 0) {
            PyErr_WriteUnraisable((PyObject *)c);
        }
        if (pending != NULL) {
            put_exception(pending);
        }
    }
    return result;
}

/* ----------------------------------------------------- the write buffer */

/* One call's sending, for the progress its exception reports: the frames
 * that were waiting in the write buffer when it began, then its own bytes.
 * A call may send in several batches (send_many); `done` counts across
 * them, the waiting bytes first. */
typedef struct {
    size_t waited;              /* bytes waiting when the call began */
    size_t waited_frames;       /* ... and the frames that end among them */
    const char *own_what;       /* the call's own bytes, after "the": "frame" */
    const char *own_name;       /* ... standing alone: "this call's frame" */
    size_t own_size;            /* 0 and NULL names: a flush, nothing of its own */
    int own_is_frame;           /* one frame (else views, or unframed data) */
    const Py_buffer *views;     /* send_many()'s frames, to count whole ones */
    Py_ssize_t nviews;
    int closing;                /* close(): what does not leave is dropped */
    size_t done;
} transfer;

static transfer
transfer_of(Connection *c, const char *own_what, const char *own_name, size_t own_size)
{
    return (transfer){.waited = c->out.len, .waited_frames = c->out.frames,
                      .own_what = own_what, .own_name = own_name, .own_size = own_size};
}

/* How many of the call's own frames end within its first n bytes; *boundary
 * says whether n falls between two of them (or at either end). */
static size_t
own_frames_within(const transfer *t, size_t n, int *boundary)
{
    if (t->views == NULL) {
        *boundary = n == 0 || (t->own_is_frame && n == t->own_size);
        return t->own_is_frame && n == t->own_size ? 1 : 0;
    }
    size_t at = 0, frames = 0;
    for (Py_ssize_t i = 0; i < t->nviews; i++) {
        size_t end = at + TF_HEADER_SIZE + (size_t)t->views[i].len;
        if (end > n) {
            break;
        }
        frames++;
        at = end;
    }
    *boundary = at == n;
    return frames;
}

/* A send of the call failed: raise, saying how far it got in the waiting
 * frames and in its own bytes.  `rest` waiting bytes did not leave; they
 * stay waiting unless `dropped`. */
static void
raise_transfer_failure(Stream *s, tf_status status, const transfer *t, size_t frames_waited,
                       size_t rest, int dropped)
{
    char what[160], advice[320];
    int boundary = 1;
    size_t own_done = t->done > t->waited ? t->done - t->waited : 0;
    size_t frames = frames_waited + own_frames_within(t, own_done, &boundary);
    const char *what_p = what;
    if (t->waited == 0) {
        what_p = t->own_what;
    }
    else if (t->own_what == NULL) {
        PyOS_snprintf(what, sizeof what, "frames waiting in the write buffer");
    }
    else {
        PyOS_snprintf(what, sizeof what, "frames waiting in the write buffer and %s",
                      t->own_name);
    }
    const char *advice_p = advice;
    if (s->send_unknown) {
        /* The words after "...the stream may no longer be on a frame boundary: " */
        if (rest > 0) {
            PyOS_snprintf(advice, sizeof advice, "close the connection (the other %zu bytes "
                          "of the write buffer were dropped: sending them could repeat "
                          "bytes)", rest);
        }
        else {
            advice_p = NULL;
        }
    }
    else if (rest > 0 && dropped) {
        PyOS_snprintf(advice, sizeof advice, "close() dropped the other %zu bytes of the "
                      "write buffer", rest);
    }
    else if (rest > 0) {
        PyOS_snprintf(advice, sizeof advice, "the other %zu bytes stay in the write buffer "
                      "(.unsent) and go out first with the next send, read or flush()%s%s%s",
                      rest, t->own_name ? "; nothing of " : "",
                      t->own_name ? t->own_name : "", t->own_name ? " was sent" : "");
    }
    else if (t->own_name == NULL || t->done == 0) {
        advice_p = NULL;        /* the default words fit */
    }
    else if (own_done == 0) {
        PyOS_snprintf(advice, sizeof advice, "every frame waiting in the write buffer left; "
                      "nothing of %s was sent, so the stream is on a frame boundary and the "
                      "call may be retried", t->own_name);
    }
    else if (boundary && t->views != NULL) {
        PyOS_snprintf(advice, sizeof advice, "the stream is on a frame boundary: the first "
                      "%zu of the %zd frames passed to send_many() left, the others did not",
                      frames - frames_waited, t->nviews);
    }
    else {
        advice_p = "the stream is no longer on a frame boundary: close the connection";
    }
    raise_send_failure(s, status, &(Progress){
        .what = what_p, .done = t->done, .expected = (Py_ssize_t)(t->waited + t->own_size),
        .counts_frames = 1, .frames = frames, .advice = advice_p});
}

/* One vectored send, with the send lock held: what is waiting in the write
 * buffer, then iov[1 .. cnt) -- the call's own bytes; iov[0] is ours.
 * What left is dropped from the buffer whatever happens, so nothing is sent
 * twice; on failure the rest stays waiting -- unless close() is sending it,
 * or a wrapped socket's sendall() failed (it does not say how much of its
 * data left: sending the rest again could repeat bytes) -- and the
 * exception says how far the call got.  Returns 0, or -1 with it set. */
static int
send_with_waiting(Connection *c, Stream *s, struct iovec *iov, int cnt, transfer *t)
{
    size_t waiting = c->out.len;
    iov[0].iov_base = c->out.data;
    iov[0].iov_len = waiting;
    size_t done = 0;
    /* Nothing waiting: no piece at all (a wrapped socket's copy loop must
     * not memcpy from a NULL buffer, even 0 bytes). */
    int skip = waiting == 0;
    tf_status status = stream_send(s, iov + skip, cnt - skip, &done);
    t->done += done;
    size_t from_buffer = done < waiting ? done : waiting;
    if (status == TF_OK) {
        tf_outbuf_consume(&c->out, waiting);
        return 0;
    }
    /* Only a call's first send finds frames waiting: any later one finds
     * them all gone (or the call would have ended). */
    size_t frames_waited = from_buffer < waiting ? tf_outbuf_frames_within(&c->out, from_buffer)
                                                 : t->waited_frames;
    int dropped = t->closing || s->send_unknown;
    tf_outbuf_consume(&c->out, dropped ? waiting : from_buffer);
    raise_transfer_failure(s, status, t, frames_waited, waiting - from_buffer, dropped);
    return -1;
}

/* Send everything waiting, with the send lock held.  `before` names what
 * the call will do once that is done ("this call's frame"), for the
 * exception to say that it was not done. */
static int
flush_locked(Connection *c, Stream *s, int closing, const char *before)
{
    if (c->out.len == 0) {
        return 0;
    }
    transfer t = transfer_of(c, NULL, before, 0);
    t.closing = closing;
    struct iovec iov[1];
    return send_with_waiting(c, s, iov, 1, &t);
}

/* Whether a send must go to the socket now rather than join the buffer: a
 * read is in progress.  It may be about to wait for the answer to this very
 * frame -- a reader thread blocked in recv() while others send -- and it
 * will not come back to send it.  (A read that starts later sends what is
 * waiting itself, before it touches the socket.) */
static int
wants_direct(Connection *c)
{
    return c->reading.owner != 0;
}

/* Before a read touches the socket, with the read lock held and s open:
 * send what is waiting, so that no request sits in our buffer while we wait
 * for its answer.  If the send lock is taken, a send is in progress (another
 * thread's, or this thread's that a signal handler or a wrapped socket's
 * method interrupted) and it sends everything waiting, seeing that a read
 * is in progress: the read neither waits for it nor does its work.  A flush
 * that fails fails the read, with the flush's progress. */
static int
flush_before_read(Connection *c, Stream *s)
{
    if (c->out.len == 0 || c->sending.owner != 0 ||
        !PyThread_acquire_lock(c->sending.lock, NOWAIT_LOCK)) {
        return 0;
    }
    c->sending.owner = PyThread_get_thread_ident();
    int r = flush_locked(c, s, 0, NULL);
    c->sending.owner = 0;
    PyThread_release_lock(c->sending.lock);
    return r;
}

/* Open the socket for a read, after sending what is waiting.  One stream,
 * so the flush and the read share the socket's one deadline. */
static int
open_for_read(Connection *c, Stream *s)
{
    int use = c->out.len > 0 ? FOR_RECV | FOR_SEND : FOR_RECV;
    if (stream_open(s, c->st, c->sock, use) < 0) {
        return -1;
    }
    if (flush_before_read(c, s) < 0) {
        stream_close(s);
        return -1;
    }
    return 0;
}

/* -------------------------------------------------------------- reading */

/* A read failed; what arrived of the current item is in the buffer, and
 * stays there.  `expected` is the item's size in bytes, or -1 (None) when
 * nothing of it arrived and its size is not known. */
static void
raise_read_failure(Connection *c, Stream *s, tf_status status, Py_ssize_t expected,
                   const char *what)
{
    size_t buffered = tf_decoder_buffered(&c->dec);
    raise_recv_failure(s, status, &(Progress){
        .what = what, .done = buffered, .expected = expected, .kept = 1,
        .rest = buffered ? (const char *)tf_decoder_head(&c->dec) : ""});
}

/* Put bytes back at the front of the buffer after a failed receive; keeps
 * the exception pending, or sets MemoryError if they did not fit. */
static void
put_back(Connection *c, const unsigned char *kept, size_t skip, const char *rest, size_t n)
{
    PyObject *pending = take_exception();
    int fed = tf_decoder_feed(&c->dec, kept, skip) == 0 &&
              tf_decoder_feed(&c->dec, rest, n) == 0;
    if (pending != NULL) {
        put_exception(pending);
    }
    else if (!fed) {
        PyErr_NoMemory();
    }
}

/* The next n bytes of the stream, after `skip` buffered bytes (a frame's
 * header) set aside, as a new bytes object: the part already buffered is
 * moved out, the rest received in place into the object as it grows, never
 * through the buffer.  On failure everything goes back into the buffer, in
 * order, so nothing received is lost.  Needs fewer than skip + n buffered. */
static PyObject *
take_then_receive(Connection *c, Stream *s, size_t skip, size_t n, Py_ssize_t expected,
                  const char *what)
{
    size_t have = tf_decoder_buffered(&c->dec) - skip;
    size_t start = n < (size_t)GROW_START ? n : (size_t)GROW_START;
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(start > have ? start : have));
    if (result == NULL) {
        return NULL;
    }
    unsigned char kept[TF_HEADER_SIZE];
    if (skip + have > 0) {      /* an empty decoder may have no buffer at all */
        const unsigned char *head = tf_decoder_head(&c->dec);
        memcpy(kept, head, skip);
        memcpy(PyBytes_AS_STRING(result), head + skip, have);
        tf_decoder_consume(&c->dec, skip + have);
    }
    size_t got = have;
    tf_status status = recv_growing_into(s, (Py_ssize_t)n, &result, &got);
    if (status == TF_OK) {
        return result;
    }
    if (result == NULL) {       /* out of memory growing it: its bytes are gone */
        put_back(c, kept, skip, "", 0);
        return NULL;
    }
    int raised = status == TF_ABORTED;
    put_back(c, kept, skip, PyBytes_AS_STRING(result), got);
    Py_DECREF(result);
    if (!raised && !PyErr_Occurred()) {
        raise_read_failure(c, s, status, expected, what);
    }
    return NULL;
}

/* The next frame's payload, with the read lock held.  With eof_ok, a clean
 * close between frames returns NULL with no exception set (the end of
 * iteration). */
static PyObject *
read_frame_locked(Connection *c, Py_ssize_t max_size, int eof_ok, const char *method)
{
    c->dec.max_size = (size_t)max_size;
    Stream s;
    int opened = 0;     /* the socket is touched only when the buffer runs dry */
    PyObject *result = NULL;
    for (;;) {
        const unsigned char *payload;
        size_t len, need;
        tf_dec_result r = tf_decoder_next(&c->dec, &payload, &len, &need);
        if (r == TF_DEC_FRAME) {
            result = PyBytes_FromStringAndSize((const char *)payload, (Py_ssize_t)len);
            break;
        }
        if (r == TF_DEC_BAD_HEADER) {
            raise_bad_header(c->st, tf_decoder_head(&c->dec));
            break;
        }
        if (r == TF_DEC_TOO_LARGE) {
            raise_too_large_to_receive(c->st, tf_decoder_head(&c->dec), len, max_size);
            break;
        }
        if (c->closed) {        /* by Python code that ran during the last recv */
            raise_closed_during(method);
            break;
        }
        if (!opened) {
            if (open_for_read(c, &s) < 0) {
                break;
            }
            opened = 1;
        }
        size_t buffered = tf_decoder_buffered(&c->dec);
        Py_ssize_t announced = buffered >= TF_HEADER_SIZE ? (Py_ssize_t)len : -1;
        if (announced >= (Py_ssize_t)DIRECT_MIN) {
            result = take_then_receive(c, &s, TF_HEADER_SIZE, len, TF_HEADER_SIZE + announced,
                                       "frame");
            break;
        }
        size_t avail;
        unsigned char *into = tf_decoder_reserve(&c->dec, need > READ_CHUNK ? need : READ_CHUNK,
                                                 &avail);
        if (into == NULL) {
            PyErr_NoMemory();
            break;
        }
        size_t got = 0;
        tf_status status = stream_recv_some(&s, (char *)into, avail, &got);
        if (status == TF_OK) {
            tf_decoder_commit(&c->dec, got);
            /* More to wait for: a signal that landed while recv() copied
             * gave no EINTR, so its handler runs now, as between the pieces
             * of any transfer -- not after the next, maybe long, wait. */
            if (tf_decoder_needed(&c->dec) == 0 || !s.hooks.interrupted(&s.hooks)) {
                continue;
            }
            status = TF_ABORTED;
            buffered = tf_decoder_buffered(&c->dec);
            size_t n;
            announced = buffered >= TF_HEADER_SIZE &&
                        tf_decode_header(tf_decoder_head(&c->dec), &n) == 0 ? (Py_ssize_t)n : -1;
        }
        if (c->closed && (status != TF_ABORTED || PyErr_ExceptionMatches(PyExc_OSError))) {
            raise_closed_during(method);
        }
        else if (!(status == TF_EOF && eof_ok && buffered == 0)) {
            Py_ssize_t expected = announced >= 0 ? TF_HEADER_SIZE + announced
                                  : buffered > 0 ? TF_HEADER_SIZE : -1;
            raise_read_failure(c, &s, status, expected,
                               announced < 0 && buffered ? "frame header" : "frame");
        }
        break;
    }
    if (opened) {
        stream_close(&s);
    }
    return result;
}

static PyObject *
read_frame_as(Connection *c, Py_ssize_t max_size, int eof_ok, const char *method)
{
    /* The common case, a whole frame already buffered and no read in
     * progress, needs no lock: taking it releases no GIL and runs no Python
     * code (a bytes object is not tracked by the GC), so the GIL alone
     * makes it atomic.  Anything else -- including a read in progress on
     * another thread, or this one re-entering -- takes the locked path. */
    if (!c->closed && c->reading.owner == 0) {
        const unsigned char *payload;
        size_t len, need;
        c->dec.max_size = (size_t)max_size;
        if (tf_decoder_next(&c->dec, &payload, &len, &need) == TF_DEC_FRAME) {
            return PyBytes_FromStringAndSize((const char *)payload, (Py_ssize_t)len);
        }
    }
    if (enter(c, &c->reading, method) < 0) {
        return NULL;
    }
    PyObject *result = read_frame_locked(c, max_size, eof_ok, method);
    return leave(c, &c->reading, result, method);
}

PyObject *
connection_read_frame(PyObject *conn, Py_ssize_t max_size)
{
    Connection *c = (Connection *)conn;
    return read_frame_as(c, max_size < 0 ? c->max_size : max_size, 0, "read_bytes");
}

/* Fill buf[0..n): buffered bytes first, then straight from the socket.  On
 * failure what arrived goes back into the buffer. */
static int
receive_exact(Connection *c, char *buf, size_t n)
{
    size_t take = tf_decoder_buffered(&c->dec);
    take = take < n ? take : n;
    if (take > 0) {             /* an empty decoder may have no buffer at all */
        memcpy(buf, tf_decoder_head(&c->dec), take);
        tf_decoder_consume(&c->dec, take);
    }
    if (take == n) {
        return 0;
    }
    Stream s;
    if (open_for_read(c, &s) < 0) {
        put_back(c, NULL, 0, buf, take);
        return -1;
    }
    size_t done = take;
    tf_status status = stream_recv_exact(&s, buf, n, &done);
    if (status != TF_OK) {
        put_back(c, NULL, 0, buf, done);
        if (!PyErr_Occurred()) {
            raise_recv_failure(&s, status, &(Progress){.what = "data", .done = done,
                                                       .expected = (Py_ssize_t)n,
                                                       .rest = buf, .kept = 1});
        }
    }
    stream_close(&s);
    return status != TF_OK ? -1 : 0;
}

/* -------------------------------------------------------------- sending */

/* The frame joins the write buffer: 0, or -1 with MemoryError (the buffer's
 * memory is allocated at its first frame). */
static int
buffer_frame(Connection *c, const char *data, Py_ssize_t len)
{
    if (tf_outbuf_add(&c->out, data, (size_t)len) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* A frame on a Connection with a write buffer, the send lock held and s
 * open: into the buffer if it fits (after sending what is waiting, if that
 * makes room); with what is waiting, in one call, if it never fits or a
 * read is in progress. */
static int
send_frame_buffered(Connection *c, Stream *s, const char *data, Py_ssize_t len)
{
    for (;;) {
        if (!wants_direct(c) && tf_outbuf_fits(&c->out, (size_t)len)) {
            return buffer_frame(c, data, len);
        }
        /* With what is waiting, in one call: a frame that can never fit,
         * sent after a separate flush, would wait for its ACK (Nagle). */
        if (wants_direct(c) || c->out.len == 0 || c->out.cap < TF_HEADER_SIZE ||
            (size_t)len > c->out.cap - TF_HEADER_SIZE) {
            unsigned char header[TF_HEADER_SIZE];
            tf_encode_header((size_t)len, header);      /* len was checked */
            struct iovec iov[3] = {{NULL, 0}, {header, TF_HEADER_SIZE},
                                   {(void *)data, (size_t)len}};
            transfer t = transfer_of(c, "frame", "this call's frame",
                                     TF_HEADER_SIZE + (size_t)len);
            t.own_is_frame = 1;
            return send_with_waiting(c, s, iov, 3, &t);
        }
        /* It would fit once what is waiting has gone.  If that fails, this
         * frame is neither sent nor buffered: the exception says so. */
        if (flush_locked(c, s, 0, "this call's frame") < 0) {
            return -1;
        }
        /* The flush released the GIL (or ran a wrapped socket's code): a
         * close() meanwhile freed the buffer, or will; the frame must not
         * join it and be dropped unseen. */
        if (c->closed) {
            raise_closed_during("send_bytes");
            return -1;
        }
    }
}

PyObject *
connection_send_frame(PyObject *conn, const char *data, Py_ssize_t len)
{
    Connection *c = (Connection *)conn;
    if ((size_t)len > TF_MAX_SIZE) {
        raise_too_large_to_send(c->st, len);
        return NULL;
    }
    /* The natural loop's common case, a small frame joining the write
     * buffer, takes no lock, as a read of a buffered frame takes none: it
     * releases no GIL and runs no Python code, so the GIL alone makes it
     * atomic.  A send in progress (its owner set before it can release the
     * GIL or run Python code) or a read in progress takes the locked path. */
    if (!c->closed && c->sending.owner == 0 && !wants_direct(c) &&
        tf_outbuf_fits(&c->out, (size_t)len)) {
        return buffer_frame(c, data, len) < 0 ? NULL : Py_NewRef(Py_None);
    }
    if (enter(c, &c->sending, "send_bytes") < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (!wants_direct(c) && tf_outbuf_fits(&c->out, (size_t)len)) {
        if (buffer_frame(c, data, len) == 0) {
            result = Py_NewRef(Py_None);
        }
        return leave(c, &c->sending, result, "send_bytes");
    }
    Stream s;
    if (stream_open(&s, c->st, c->sock, FOR_SEND) == 0) {
        int r = c->out.cap > 0 ? send_frame_buffered(c, &s, data, len)
                               : send_frame_on(&s, data, len);
        stream_close(&s);
        if (r == 0) {
            result = Py_NewRef(Py_None);
        }
    }
    return leave(c, &c->sending, result, "send_bytes");
}

/* Send the frames views[0..count) in one vectored call, after what is
 * waiting in the write buffer: headers and small payloads copied side by
 * side into one staging block, large payloads by reference.  Returns -1
 * with an exception set on failure. */
static int
send_batch(Connection *c, Stream *s, const Py_buffer *views, Py_ssize_t count, transfer *t)
{
    size_t staged = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        staged += TF_HEADER_SIZE + (views[i].len <= COPY_MAX ? (size_t)views[i].len : 0);
    }
    unsigned char *block = PyMem_Malloc(staged);
    struct iovec *iov = PyMem_Malloc(sizeof(struct iovec) * (size_t)(2 * count + 2));
    if (block == NULL || iov == NULL) {
        PyMem_Free(block);
        PyMem_Free(iov);
        PyErr_NoMemory();
        return -1;
    }
    int cnt = 1;                /* iov[0]: what is waiting */
    size_t at = 0, run_start = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        /* Sizes were checked on these very views, which pin them; a codec
         * failure is still never ignored: no unwritten header goes out. */
        if (tf_encode_header((size_t)views[i].len, block + at) < 0) {
            raise_too_large_to_send(s->st, views[i].len);
            PyMem_Free(block);
            PyMem_Free(iov);
            return -1;
        }
        at += TF_HEADER_SIZE;
        if (views[i].len <= COPY_MAX) {
            memcpy(block + at, views[i].buf, (size_t)views[i].len);
            at += (size_t)views[i].len;
            continue;
        }
        /* Close the staged run (ending with this header), then the payload. */
        iov[cnt].iov_base = block + run_start;
        iov[cnt++].iov_len = at - run_start;
        iov[cnt].iov_base = views[i].buf;
        iov[cnt++].iov_len = (size_t)views[i].len;
        run_start = at;
    }
    if (at > run_start) {
        iov[cnt].iov_base = block + run_start;
        iov[cnt++].iov_len = at - run_start;
    }
    int r = send_with_waiting(c, s, iov, cnt, t);
    PyMem_Free(block);
    PyMem_Free(iov);
    return r;
}

/* Send frames, with the send lock held and every view pinned: into the
 * write buffer if they all fit and no read is in progress, else after what
 * is waiting, BATCH frames per system call. */
static int
send_views_locked(Connection *c, const Py_buffer *views, Py_ssize_t n, Py_ssize_t total)
{
    if (!wants_direct(c) && (size_t)total <= c->out.cap - c->out.len) {
        for (Py_ssize_t i = 0; i < n; i++) {
            /* Only the first frame can fail (the memory is allocated then):
             * all or nothing. */
            if (buffer_frame(c, views[i].buf, views[i].len) < 0) {
                return -1;
            }
        }
        return 0;
    }
    Stream s;
    if (stream_open(&s, c->st, c->sock, FOR_SEND) < 0) {
        return -1;
    }
    transfer t = transfer_of(c, "frames passed to send_many()",
                             "the frames passed to send_many()", (size_t)total);
    t.views = views;
    t.nviews = n;
    int r = 0;
    for (Py_ssize_t lo = 0; lo < n && r == 0; lo += BATCH) {
        r = send_batch(c, &s, views + lo, n - lo < BATCH ? n - lo : BATCH, &t);
    }
    if (n == 0 && c->out.len > 0) {
        r = flush_locked(c, &s, 0, NULL);
    }
    stream_close(&s);
    return r;
}

static PyObject *
send_many(Connection *c, PyObject *iterable)
{
    if (c->closed) {
        raise_closed("send_many");
        return NULL;
    }
    /* An immutable copy: iterating and __buffer__ run Python code, which
     * must not be able to change (or free) the items we send. */
    PyObject *items = PySequence_Tuple(iterable);
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(items), held = 0;
    Py_buffer *views = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Py_buffer));
    PyObject *result = NULL;
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* Every view is taken, and so every size fixed (an exported bytearray
     * cannot be resized), before any byte leaves. */
    size_t total = 0;
    for (; held < n; held++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(items, held), &views[held], PyBUF_SIMPLE) < 0) {
            goto done;
        }
        if ((size_t)views[held].len > TF_MAX_SIZE) {
            raise_too_large_to_send(c->st, views[held].len);
            held++;
            goto done;
        }
        total += TF_HEADER_SIZE + (size_t)views[held].len;
    }
    if (enter(c, &c->sending, "send_many") < 0) {
        goto done;
    }
    int r = send_views_locked(c, views, n, (Py_ssize_t)total);
    result = leave(c, &c->sending, r < 0 ? NULL : PyLong_FromSsize_t(n), "send_many");
done:
    if (views != NULL) {
        PyObject *pending = take_exception();
        for (Py_ssize_t i = 0; i < held; i++) {
            PyBuffer_Release(&views[i]);
        }
        PyMem_Free(views);
        if (pending != NULL) {
            put_exception(pending);
        }
    }
    Py_DECREF(items);
    return result;
}

/* -------------------------------------------------------------- methods */

static PyObject *
connection_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"sock", "max_size", "write_buffer", NULL};
    PyObject *sock, *max_size_obj = NULL, *write_buffer_obj = NULL;
    Py_ssize_t max_size, write_buffer;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$OO:Connection", kwlist, &sock,
                                     &max_size_obj, &write_buffer_obj) ||
        max_size_arg(max_size_obj, (Py_ssize_t)TF_MAX_SIZE, &max_size) < 0 ||
        size_arg(write_buffer_obj, "write_buffer", 0, &write_buffer) < 0) {
        return NULL;
    }
    if ((size_t)write_buffer > TF_MAX_SIZE + TF_HEADER_SIZE) {
        /* Not clamped: each send would then fail to allocate it. */
        PyErr_Format(PyExc_ValueError,
                     "write_buffer=%zd is larger than the largest frame (%zu bytes with its "
                     "header); a buffer that large batches nothing more (65536 is plenty)",
                     write_buffer, (size_t)(TF_MAX_SIZE + TF_HEADER_SIZE));
        return NULL;
    }
    module_state *st = state_from_type(type, connection_new);
    if (st == NULL) {
        return NULL;
    }
    if (is_connection(st, sock)) {
        PyErr_SetString(PyExc_TypeError, "Connection() takes a socket, not a Connection");
        return NULL;
    }
    if (check_stream_socket(st, sock, FOR_RECV | FOR_SEND) < 0) {
        return NULL;
    }
    Connection *c = (Connection *)type->tp_alloc(type, 0);
    if (c == NULL) {
        return NULL;
    }
    c->st = st;
    c->max_size = max_size;
    tf_decoder_init(&c->dec, (size_t)max_size);
    tf_outbuf_init(&c->out, (size_t)write_buffer);
    c->reading.lock = PyThread_allocate_lock();
    c->sending.lock = PyThread_allocate_lock();
    c->reading.doing = "reading";
    c->sending.doing = "sending";
    if (c->reading.lock == NULL || c->sending.lock == NULL) {
        Py_DECREF(c);
        return PyErr_NoMemory();
    }
    c->sock = Py_NewRef(sock);
    return (PyObject *)c;
}

static int
connection_traverse(Connection *c, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->sock);
    return 0;
}

static int
connection_clear(Connection *c)
{
    Py_CLEAR(c->sock);
    return 0;
}

/* Frames still waiting when the Connection is collected: warn, as an
 * unclosed file does, and drop them.  Not sent, unlike io.BufferedWriter's
 * flush on collection: a finalizer runs wherever the garbage collector
 * happens to run -- any thread, any moment, interpreter shutdown -- and a
 * send there could block for as long as the peer does not read, or run a
 * wrapped socket's Python code in that state; and its error could only be
 * printed.  close(), flush() or `with` send them where errors can be had. */
static void
connection_finalize(Connection *c)
{
    if (c->closed || c->out.len == 0) {
        return;
    }
    PyObject *pending = take_exception();
    if (PyErr_ResourceWarning((PyObject *)c, 1,
                              "unclosed tcpframe Connection with %zu frame(s) (%zu bytes) "
                              "never sent: they are dropped; close() or flush() it, or use "
                              "`with`", c->out.frames, c->out.len) < 0) {
        PyErr_WriteUnraisable((PyObject *)c);
    }
    if (pending != NULL) {
        put_exception(pending);
    }
}

static void
connection_dealloc(Connection *c)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)c) < 0) {
        return;             /* the warning's code resurrected it */
    }
    PyTypeObject *type = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    connection_clear(c);
    tf_decoder_free(&c->dec);
    tf_outbuf_free(&c->out);
    if (c->reading.lock != NULL) {
        PyThread_free_lock(c->reading.lock);
    }
    if (c->sending.lock != NULL) {
        PyThread_free_lock(c->sending.lock);
    }
    type->tp_free((PyObject *)c);
    Py_DECREF(type);
}

static PyObject *
c_read_bytes(Connection *c, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t max_size;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs != 0 || nkw > 1 ||
        (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "max_size") != 0)) {
        PyErr_SetString(PyExc_TypeError, "read_bytes() takes only the keyword argument max_size");
        return NULL;
    }
    if (max_size_arg(nkw == 1 ? args[0] : NULL, c->max_size, &max_size) < 0) {
        return NULL;
    }
    return read_frame_as(c, max_size, 0, "read_bytes");
}

static PyObject *
c_send_bytes(Connection *c, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *r = connection_send_frame((PyObject *)c, view.buf, view.len);
    PyBuffer_Release(&view);
    return r;
}

static PyObject *
c_receive_all(Connection *c, PyObject *arg)
{
    Py_ssize_t n;
    if (size_arg(arg, "n", 0, &n) < 0 || enter(c, &c->reading, "receive_all") < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (tf_decoder_buffered(&c->dec) >= (size_t)n) {
        result = PyBytes_FromStringAndSize(n ? (const char *)tf_decoder_head(&c->dec) : "", n);
        if (result != NULL) {
            tf_decoder_consume(&c->dec, (size_t)n);
        }
    }
    else {
        Stream s;
        if (open_for_read(c, &s) == 0) {
            result = take_then_receive(c, &s, 0, (size_t)n, n, "data");
            stream_close(&s);
        }
    }
    return leave(c, &c->reading, result, "receive_all");
}

static PyObject *
c_receive_into(Connection *c, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (enter(c, &c->reading, "receive_into") == 0) {
        int r = receive_exact(c, view.buf, (size_t)view.len);
        result = leave(c, &c->reading, r < 0 ? NULL : PyLong_FromSsize_t(view.len),
                       "receive_into");
    }
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
c_send_all(Connection *c, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (enter(c, &c->sending, "send_all") == 0) {
        Stream s;
        if (stream_open(&s, c->st, c->sock, FOR_SEND) == 0) {
            int r;
            if (c->out.len == 0) {
                r = send_all_on(&s, view.buf, view.len);
            }
            else {      /* unframed bytes are never buffered: after the frames */
                struct iovec iov[2] = {{NULL, 0}, {view.buf, (size_t)view.len}};
                transfer t = transfer_of(c, "data", "this call's data", (size_t)view.len);
                r = send_with_waiting(c, &s, iov, 2, &t);
            }
            stream_close(&s);
            if (r == 0) {
                result = Py_NewRef(Py_None);
            }
        }
        result = leave(c, &c->sending, result, "send_all");
    }
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
c_fileno(Connection *c, PyObject *unused)
{
    (void)unused;
    if (c->closed || c->sock == NULL) {
        return PyLong_FromLong(-1);
    }
    return PyObject_CallMethod(c->sock, "fileno", NULL);
}

static PyObject *
c_flush(Connection *c, PyObject *unused)
{
    (void)unused;
    if (enter(c, &c->sending, "flush") < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    Stream s;
    if (c->out.len == 0) {
        result = Py_NewRef(Py_None);
    }
    else if (stream_open(&s, c->st, c->sock, FOR_SEND) == 0) {
        if (flush_locked(c, &s, 0, NULL) == 0) {
            result = Py_NewRef(Py_None);
        }
        stream_close(&s);
    }
    return leave(c, &c->sending, result, "flush");
}

/* close()'s first step: send what is waiting, if no send is in progress
 * (one that is -- another thread's, or the one a signal handler calling
 * close() interrupted -- is cut short by the close and says so itself).
 * What does not leave is dropped; -1 with the exception set if anything
 * failed. */
static int
flush_for_close(Connection *c)
{
    if (c->closed || c->out.len == 0 || c->sending.owner != 0 ||
        !PyThread_acquire_lock(c->sending.lock, NOWAIT_LOCK)) {
        return 0;
    }
    c->sending.owner = PyThread_get_thread_ident();
    c->users++;             /* no close() meanwhile may free what we send */
    Stream s;
    int r = -1;
    if (stream_open(&s, c->st, c->sock, FOR_SEND) == 0) {
        r = flush_locked(c, &s, 1, NULL);
        stream_close(&s);
    }
    c->sending.owner = 0;
    PyThread_release_lock(c->sending.lock);
    c->users--;
    if (r < 0 && c->closed && PyErr_ExceptionMatches(PyExc_OSError)) {
        raise_closed_during("close");   /* another close() cut the flush short */
    }
    return r;
}

static PyObject *
c_close(Connection *c, PyObject *unused)
{
    (void)unused;
    /* As io.BufferedWriter.close(): a failed flush is raised, but the
     * socket is closed all the same. */
    PyObject *flush_error = flush_for_close(c) < 0 ? take_exception() : NULL;
    c->closed = 1;
    if (c->sock == NULL) {
        if (flush_error != NULL) {
            put_exception(flush_error);
            return NULL;
        }
        Py_RETURN_NONE;
    }
    int failed = 0;
    if (c->users > 0 && !c->waking) {
        c->users++;
        c->waking = 1;
        failed = wake_users(c);
        c->waking = 0;
        c->users--;
    }
    if (c->users == 0) {    /* else the last of them closes the socket */
        PyObject *pending = take_exception();
        failed |= finish_close(c) < 0;
        if (pending != NULL) {
            PyErr_Clear();
            put_exception(pending);
        }
    }
    if (flush_error != NULL) {
        if (failed) {       /* as `try: flush() finally: close()` would chain them */
            PyObject *later = take_exception();
            PyException_SetContext(later, flush_error);
            put_exception(later);
            return NULL;
        }
        put_exception(flush_error);
        return NULL;
    }
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
c_enter(Connection *c, PyObject *unused)
{
    (void)unused;
    if (c->closed) {
        raise_closed("__enter__");
        return NULL;
    }
    return Py_NewRef((PyObject *)c);
}

static PyObject *
c_exit(Connection *c, PyObject *args)
{
    (void)args;
    PyObject *r = c_close(c, NULL);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyObject *
connection_iternext(Connection *c)
{
    return read_frame_as(c, c->max_size, 1, "__next__");
}

static PyObject *
get_socket(Connection *c, void *closure)
{
    (void)closure;
    if (c->closed || c->sock == NULL) {
        raise_closed("socket");
        return NULL;
    }
    return Py_NewRef(c->sock);
}

static PyObject *
get_closed(Connection *c, void *closure)
{
    (void)closure;
    return PyBool_FromLong(c->closed);
}

static PyObject *
get_buffered(Connection *c, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(tf_decoder_buffered(&c->dec));
}

/* Whether read_bytes() would return (or raise) without touching the
 * socket: select() cannot see bytes that are already in our buffer. */
static PyObject *
get_frame_ready(Connection *c, void *closure)
{
    (void)closure;
    size_t buffered = tf_decoder_buffered(&c->dec), n;
    if (buffered < TF_HEADER_SIZE) {
        Py_RETURN_FALSE;
    }
    if (tf_decode_header(tf_decoder_head(&c->dec), &n) < 0 || n > (size_t)c->max_size) {
        Py_RETURN_TRUE;     /* read_bytes() raises at once */
    }
    return PyBool_FromLong(buffered - TF_HEADER_SIZE >= n);
}

static PyObject *
get_max_size(Connection *c, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(c->max_size);
}

static PyObject *
get_write_buffer(Connection *c, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(c->out.cap);
}

static PyObject *
get_unsent(Connection *c, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(c->out.len);
}

static PyMethodDef connection_methods[] = {
    {"read_bytes", (PyCFunction)(void (*)(void))c_read_bytes, METH_FASTCALL | METH_KEYWORDS,
     "read_bytes($self, /, *, max_size=None)\n--\n\n"
     "Receive one frame's payload.  Frames already buffered cost no system\n"
     "call; max_size None (the default) means the Connection's own."},
    {"send_bytes", (PyCFunction)c_send_bytes, METH_O,
     "send_bytes($self, data, /)\n--\n\n"
     "Send data as one frame: one system call, or with write_buffer, into the\n"
     "buffer (sent with it when the next frame would not fit, on flush(),\n"
     "close() or before a read waits)."},
    {"send_many", (PyCFunction)send_many, METH_O,
     "send_many($self, frames, /)\n--\n\n"
     "Send every item of an iterable of bytes-like objects as a frame each,\n"
     "hundreds per system call (or into the write buffer, if they all fit).\n"
     "Returns how many frames were sent.  Every size is checked\n"
     "(FrameTooLarge) before any byte is sent.  A failure part way says how\n"
     "many whole frames left (.sent bytes, .frames_sent)."},
    {"flush", (PyCFunction)c_flush, METH_NOARGS,
     "flush($self, /)\n--\n\n"
     "Send the frames waiting in the write buffer (one system call).  On a\n"
     "failure the exception says how many bytes and whole frames left\n"
     "(.sent, .frames_sent); the rest stays waiting (.unsent), so flush()\n"
     "may be called again and no byte is sent twice."},
    {"receive_all", (PyCFunction)c_receive_all, METH_O,
     "receive_all($self, n, /)\n--\n\nExactly n bytes: buffered ones first."},
    {"receive_into", (PyCFunction)c_receive_into, METH_O,
     "receive_into($self, buffer, /)\n--\n\nFill the writable buffer; return its length."},
    {"send_all", (PyCFunction)c_send_all, METH_O,
     "send_all($self, data, /)\n--\n\n"
     "Send every byte of data (no framing; never buffered: the frames waiting\n"
     "in the write buffer go first, in the same system call)."},
    {"fileno", (PyCFunction)c_fileno, METH_NOARGS,
     "fileno($self, /)\n--\n\nThe socket's file descriptor, or -1 once closed."},
    {"close", (PyCFunction)c_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Send the frames waiting in the write buffer, then close the socket and\n"
     "drop the buffers.  If that send fails, its error is raised -- after the\n"
     "socket is closed, as io.BufferedWriter.close() does.  Safe to repeat,\n"
     "and from any thread: calls in progress on other threads are woken and\n"
     "fail with ValueError, and the socket is closed when the last of them\n"
     "returns."},
    {"__enter__", (PyCFunction)c_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)c_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef connection_getset[] = {
    {"socket", (getter)get_socket, NULL, "The socket this Connection owns.", NULL},
    {"closed", (getter)get_closed, NULL, "True once close() was called.", NULL},
    {"buffered", (getter)get_buffered, NULL,
     "Bytes received but not yet returned (read ahead of the current frame).", NULL},
    {"frame_ready", (getter)get_frame_ready, NULL,
     "True when a whole frame is buffered: read_bytes() will return it (or\n"
     "raise, at a bad header) without touching the socket.  select() and\n"
     "selectors see only the socket, so check this first:\n\n"
     "    if conn.frame_ready or select.select([conn], [], [], t)[0]: ...", NULL},
    {"max_size", (getter)get_max_size, NULL, "The default max_size of read_bytes().", NULL},
    {"write_buffer", (getter)get_write_buffer, NULL,
     "The write buffer's size in bytes; 0: none, every send is on the wire\n"
     "when it returns.", NULL},
    {"unsent", (getter)get_unsent, NULL,
     "Bytes of frames handed to a send that wait in the write buffer.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(connection_doc,
"Connection(sock, *, max_size=99999999, write_buffer=0)\n--\n\n"
"A socket plus a receive buffer, for fast framed conversations.\n\n"
"One recv() may bring many frames, so small messages cost one system call\n"
"per batch; large payloads are received straight into their bytes object;\n"
"send_many() sends many frames in one call.  `for payload in conn:` yields\n"
"frames until the peer closes cleanly between frames.\n\n"
"The Connection owns the socket: close it through the Connection, and do\n"
"not read from the socket directly any more (bytes may be buffered here).\n"
"The module's functions accept a Connection and use its buffer.\n"
"Timeouts, signals, the GIL and TLS behave as with the module's functions,\n"
"and a timeout loses nothing: received bytes stay buffered and the next\n"
"read continues.  frame_ready tells whether a frame is already buffered\n"
"(select() cannot see it).\n\n"
"write_buffer=N (bytes) makes sends collect whole frames in a buffer that\n"
"goes out in one system call when the next frame would not fit, on\n"
"flush(), on close() (and `with`'s exit), and before any read on this\n"
"Connection touches the socket -- so request/response code never waits\n"
"for an answer to a request still buffered.  A frame larger than the\n"
"buffer goes out directly, with what was waiting.  While a read is in\n"
"progress (a reader thread), sends go straight out.  Choose it, as\n"
"io.BufferedWriter, for many small sends in a row (65536 is a good size);\n"
"keep 0 (the default) when each send must be on the wire when it returns,\n"
"e.g. when the answer is waited for with select() rather than a read (or\n"
"call flush() first: select() sends nothing).  A failed flush\n"
"raises from the call that flushed, with .sent and .frames_sent; what did\n"
"not leave stays in .unsent.  A Connection collected with frames waiting\n"
"warns (ResourceWarning) and drops them.\n\n"
"Threads: one thread may read while another sends; a second reader (or\n"
"sender) waits for the first; a call back into the same direction from the\n"
"same thread (a signal handler) raises RuntimeError.");

static PyType_Slot connection_slots[] = {
    {Py_tp_doc, (void *)connection_doc},
    {Py_tp_new, connection_new},
    {Py_tp_dealloc, connection_dealloc},
    {Py_tp_finalize, connection_finalize},
    {Py_tp_traverse, connection_traverse},
    {Py_tp_clear, connection_clear},
    {Py_tp_methods, connection_methods},
    {Py_tp_getset, connection_getset},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, connection_iternext},
    {0, NULL},
};

PyType_Spec connection_spec = {
    .name = "tcpframe._tcpframe.Connection",
    .basicsize = sizeof(Connection),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = connection_slots,
};
