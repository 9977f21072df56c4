/* The binding's socket driving: a Stream per call, over a plain socket's
 * file descriptor (the C core) or a wrapped socket's own methods, and the
 * exceptions that carry how far a transfer got. */
#include "binding.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

/* A wrapped socket's recv_into() gets a private bytearray of at most this
 * many bytes (TLS hands out one 16 KiB record per call anyway), and its
 * sendall() private bytes objects of at most SEND_CHUNK. */
#define RECV_CHUNK ((Py_ssize_t)1 << 16)
#define SEND_CHUNK ((size_t)1 << 18)

PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_DECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

void
put_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* Walk from `type` (perhaps a Python subclass, which has no module) to the
 * type that PyType_FromModuleAndSpec made with this tp_new. */
module_state *
state_from_type(PyTypeObject *type, newfunc new)
{
    for (PyTypeObject *t = type; t != NULL; t = t->tp_base) {
        if (t->tp_new != new || !PyType_HasFeature(t, Py_TPFLAGS_HEAPTYPE)) {
            continue;
        }
        PyObject *module = PyType_GetModule(t);
        if (module != NULL) {
            return get_state(module);
        }
        PyErr_Clear();      /* a Python subclass: keep walking */
    }
    PyErr_Format(PyExc_TypeError, "%s is not a tcpframe type", type->tp_name);
    return NULL;
}

/* ---------------------------------------------------------------- errors */

void
raise_new(PyObject *cls, const char *format, ...)
{
    va_list va;
    va_start(va, format);
    PyObject *args = Py_VaBuildValue(format, va);
    va_end(va);
    if (args == NULL) {
        return;
    }
    PyObject *exc = PyObject_CallObject(cls, args);
    Py_DECREF(args);
    if (exc != NULL) {
        PyErr_SetObject(cls, exc);
        Py_DECREF(exc);
    }
}

void
raise_bad_header(module_state *st, const unsigned char *header)
{
    PyObject *raw = PyBytes_FromStringAndSize((const char *)header, TF_HEADER_SIZE);
    if (raw == NULL) {
        return;
    }
    PyObject *message = PyUnicode_FromFormat(
        "bad frame header %R: expected 8 ASCII digits '0'-'9' giving the payload "
        "length, zero-padded (e.g. b'00000005' for 5 bytes); the stream is out of "
        "sync, close the connection", raw);
    if (message != NULL) {
        raise_new(st->FrameError, "(NO)", message, raw);
    }
    Py_DECREF(raw);
}

void
raise_too_large_to_receive(module_state *st, const unsigned char *header, size_t n,
                           Py_ssize_t max_size)
{
    PyObject *raw = PyBytes_FromStringAndSize((const char *)header, TF_HEADER_SIZE);
    if (raw == NULL) {
        return;
    }
    PyObject *msg = PyUnicode_FromFormat(
        "the peer announced a frame of %zu bytes, over max_size=%zd; no payload "
        "byte was read, the stream is out of sync: close the connection (or "
        "raise max_size if such frames are expected)", n, max_size);
    if (msg != NULL) {
        raise_new(st->FrameTooLarge, "(NnnO)", msg, (Py_ssize_t)n, max_size, raw);
    }
    Py_DECREF(raw);
}

void
raise_too_large_to_send(module_state *st, Py_ssize_t size)
{
    raise_new(st->FrameTooLarge, "(snn)",
              "payload too large for a frame: the 8-digit header can announce at "
              "most 99,999,999 bytes; nothing was sent, split the data into "
              "several frames", size, (Py_ssize_t)TF_MAX_SIZE);
}

/* ---------------------------------------------------------- socket check */

static const char *
kind_name(long kind)
{
    switch (kind) {
    case SOCK_DGRAM: return "SOCK_DGRAM (UDP)";
    case SOCK_RAW: return "SOCK_RAW";
    case SOCK_SEQPACKET: return "SOCK_SEQPACKET";
    default: return "non-stream";
    }
}

int
check_stream_socket(module_state *st, PyObject *obj, int use)
{
    if (PyObject_TypeCheck(obj, (PyTypeObject *)st->socket_type)) {
        /* The C-level field: socket.socket.type is a Python property. */
        PyObject *kind = Py_TYPE(st->socket_kind)->tp_descr_get(st->socket_kind, obj, NULL);
        if (kind == NULL) {
            return -1;
        }
        long k = PyLong_AsLong(kind);
        Py_DECREF(kind);
        if (k == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (k != SOCK_STREAM) {
            PyErr_Format(PyExc_ValueError,
                         "tcpframe needs a stream socket (SOCK_STREAM: TCP or a Unix "
                         "stream socket), got a %s socket: frames have no meaning over "
                         "datagrams", kind_name(k));
            return -1;
        }
        return 0;
    }
    int missing_recv = (use & FOR_RECV) && !PyObject_HasAttrString(obj, "recv_into");
    int missing_send = (use & FOR_SEND) && !PyObject_HasAttrString(obj, "sendall");
    if (missing_recv || missing_send) {
        PyErr_Format(PyExc_TypeError,
                     "expected a connected socket (socket.socket, ssl.SSLSocket, or an "
                     "object with %s), got %.100s",
                     use == (FOR_RECV | FOR_SEND) ? "recv_into() and sendall()"
                     : use == FOR_RECV ? "recv_into()" : "sendall()",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    return 0;
}

/* --------------------------------------------------------------- streams */

/* Before each system call on a plain socket's fd: the socket may have been
 * closed (by another thread, a signal handler) since the last one, and its
 * fd number handed to a new socket.  Re-read it, as CPython's own socket
 * methods do, and refuse to go on if it changed. */
static int
gil_release(tf_hooks *hooks)
{
    Stream *s = (Stream *)hooks;
    PyObject *fd = PyObject_CallMethod(s->sock, "fileno", NULL);
    long v = fd == NULL ? -1 : PyLong_AsLong(fd);
    Py_XDECREF(fd);
    if (v != s->io.fd) {
        if (!PyErr_Occurred()) {
            raise_new(PyExc_OSError, "(is)", EBADF, "the socket was closed during the "
                      "call (by another thread or a signal handler); nothing more can "
                      "be moved");
        }
        return 1;
    }
    s->tstate = PyEval_SaveThread();
    return 0;
}

static void
gil_acquire(tf_hooks *hooks)
{
    PyEval_RestoreThread(((Stream *)hooks)->tstate);
}

/* EINTR: run the Python signal handlers now.  One that raises (Ctrl-C) stops
 * the transfer; one that returns lets it go on with the time that is left
 * (if it closed the socket, the next gil_release() says so). */
static int
run_signal_handlers(tf_hooks *hooks)
{
    (void)hooks;
    return PyErr_CheckSignals() < 0;
}

/* The socket's timeout in seconds, or NO_TIMEOUT. */
static int
read_timeout(Stream *s)
{
    PyObject *t = PyObject_CallMethod(s->sock, "gettimeout", NULL);
    if (t == NULL) {
        if (!s->wrapped || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();      /* a minimal wrapper: no timeout, it blocks */
        return 0;
    }
    if (t != Py_None) {
        double v = PyFloat_AsDouble(t);
        if (v == -1.0 && PyErr_Occurred()) {
            Py_DECREF(t);
            return -1;
        }
        if (!(v >= 0.0)) {      /* negative, or NaN: no deadline can be made of it */
            PyErr_Format(PyExc_ValueError, "%.100s.gettimeout() returned %R: expected "
                         "None or a number of seconds >= 0", Py_TYPE(s->sock)->tp_name, t);
            Py_DECREF(t);
            return -1;
        }
        s->timeout = v >= TIMEOUT_CEILING ? NO_TIMEOUT : v;
    }
    Py_DECREF(t);
    return 0;
}

int
stream_open(Stream *s, module_state *st, PyObject *sock, int use)
{
    s->hooks.release = gil_release;
    s->hooks.acquire = gil_acquire;
    s->hooks.interrupted = run_signal_handlers;
    s->tstate = NULL;
    s->st = st;
    /* Ours before any Python code runs: that code may close the socket and
     * drop every other reference to it. */
    s->sock = Py_NewRef(sock);
    s->wrapped = !Py_IS_TYPE(sock, (PyTypeObject *)st->socket_type);
    s->timeout = NO_TIMEOUT;
    s->send_unknown = 0;
    s->scratch = NULL;
    s->io.fd = -1;
    s->io.hooks = &s->hooks;
    s->io.error = 0;
    s->io.deadline_ns = TF_NO_DEADLINE;

    if (check_stream_socket(st, sock, use) < 0 || read_timeout(s) < 0) {
        goto fail;
    }
    if (s->timeout != NO_TIMEOUT) {
        s->io.deadline_ns = tf_monotonic_ns() + (int64_t)(s->timeout * 1e9);
    }
    if (!s->wrapped) {
        PyObject *fd = PyObject_CallMethod(sock, "fileno", NULL);
        if (fd == NULL) {
            goto fail;
        }
        long v = PyLong_AsLong(fd);
        Py_DECREF(fd);
        if (v == -1 && PyErr_Occurred()) {
            goto fail;
        }
        if (v < 0) {
            raise_new(PyExc_OSError, "(is)", EBADF,
                      "the socket is closed (fileno() is -1); open a new connection");
            goto fail;
        }
        s->io.fd = (int)v;
    }
    return 0;
fail:
    Py_CLEAR(s->sock);
    return -1;
}

void
stream_close(Stream *s)
{
    Py_CLEAR(s->scratch);
    Py_CLEAR(s->sock);
}

/* Before each method call on a wrapped socket: has our deadline passed?
 * Its timeout is never changed -- it is the user's, and other threads may
 * be using the socket -- so each call may wait up to that timeout, and a
 * whole transfer ends within twice it at worst. */
static tf_status
wrapped_check_deadline(Stream *s)
{
    if (s->timeout > 0.0 && tf_monotonic_ns() >= s->io.deadline_ns) {
        return TF_TIMEOUT;
    }
    return TF_OK;
}

/* A Python exception from a wrapped socket: a timeout, or "would block" on
 * a non-blocking socket, is ours to report with the progress; anything
 * else propagates as it is. */
static tf_status
wrapped_failed(Stream *s)
{
    if (PyErr_ExceptionMatches(s->st->socket_timeout) ||
        PyErr_ExceptionMatches(PyExc_BlockingIOError)) {
        PyErr_Clear();
        return TF_TIMEOUT;
    }
    /* SSL's "would block" is its own: look only if ssl was ever imported
     * (an SSLSocket cannot exist otherwise).  Our own reference: looking up
     * its attributes may run code that drops sys.modules' one. */
    PyObject *exc = take_exception();
    PyObject *name = PyUnicode_FromString("ssl");
    PyObject *mod = name == NULL ? NULL : PyImport_GetModule(name);
    Py_XDECREF(name);
    if (mod == NULL) {
        PyErr_Clear();
        put_exception(exc);
        return TF_ABORTED;
    }
    int would_block = 0;
    static const char *const names[] = {"SSLWantReadError", "SSLWantWriteError"};
    for (int i = 0; i < 2 && !would_block; i++) {
        PyObject *cls = PyObject_GetAttrString(mod, names[i]);
        if (cls == NULL) {
            PyErr_Clear();      /* a stand-in ssl module: nothing matches */
            continue;
        }
        would_block = PyErr_GivenExceptionMatches(exc, cls);
        Py_DECREF(cls);
    }
    Py_DECREF(mod);
    if (would_block) {
        Py_DECREF(exc);
        return TF_TIMEOUT;
    }
    put_exception(exc);
    return TF_ABORTED;
}

/* One recv_into() on a wrapped socket.  It fills a private bytearray, whose
 * bytes we then copy: the method may keep its argument (or a slice of a
 * memoryview of it) forever, and must never hold a pointer into a bytes
 * object we return or a buffer we move. */
static tf_status
wrapped_recv_some(Stream *s, char *buf, size_t n, size_t *got)
{
    tf_status armed = wrapped_check_deadline(s);
    if (armed != TF_OK) {
        return armed;
    }
    Py_ssize_t want = n > (size_t)RECV_CHUNK ? RECV_CHUNK : (Py_ssize_t)n;
    if (s->scratch != NULL && Py_REFCNT(s->scratch) > 1) {
        Py_CLEAR(s->scratch);       /* kept by the method: never reuse it */
    }
    Py_ssize_t had = s->scratch == NULL ? 0 : PyByteArray_GET_SIZE(s->scratch);
    if (s->scratch == NULL) {
        s->scratch = PyByteArray_FromStringAndSize(NULL, want);
    }
    else if (had != want && PyByteArray_Resize(s->scratch, want) < 0) {
        Py_CLEAR(s->scratch);
    }
    if (s->scratch == NULL) {
        return TF_ABORTED;
    }
    /* Zero what was never written: a method that claims more bytes than it
     * wrote must not hand out our heap.  (The rest held this stream's own
     * earlier bytes.) */
    if (want > had) {
        memset(PyByteArray_AS_STRING(s->scratch) + had, 0, (size_t)(want - had));
    }
    PyObject *scratch = Py_NewRef(s->scratch);
    PyObject *r = PyObject_CallMethod(s->sock, "recv_into", "O", scratch);
    if (r == NULL) {
        Py_DECREF(scratch);
        return wrapped_failed(s);
    }
    Py_ssize_t k = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    tf_status status = TF_OK;
    if (k == -1 && PyErr_Occurred()) {
        status = TF_ABORTED;
    }
    /* The method may have resized the bytearray: trust only what is there. */
    else if (k < 0 || k > want || k > PyByteArray_GET_SIZE(scratch)) {
        PyErr_Format(PyExc_ValueError,
                     "%.200s.recv_into() returned %zd for a buffer of %zd bytes",
                     Py_TYPE(s->sock)->tp_name, k, want);
        status = TF_ABORTED;
    }
    else {
        memcpy(buf, PyByteArray_AS_STRING(scratch), (size_t)k);
        *got = (size_t)k;
        status = k == 0 ? TF_EOF : TF_OK;
    }
    Py_DECREF(scratch);
    return status;
}

tf_status
stream_recv_some(Stream *s, char *buf, size_t n, size_t *got)
{
    return s->wrapped ? wrapped_recv_some(s, buf, n, got) : tf_recv_some(&s->io, buf, n, got);
}

tf_status
stream_recv_exact(Stream *s, char *buf, size_t n, size_t *done)
{
    if (!s->wrapped) {
        return tf_recv_exact(&s->io, buf, n, done);
    }
    while (*done < n) {
        size_t got = 0;
        tf_status status = wrapped_recv_some(s, buf + *done, n - *done, &got);
        if (status != TF_OK) {
            return status;
        }
        *done += got;
    }
    return TF_OK;
}

/* Send iov[0..cnt) through a wrapped socket's sendall(), in private bytes
 * objects of up to SEND_CHUNK joined from the pieces: small pieces (a
 * header and its payload) leave together, so Nagle never holds back a
 * second small write, and the method never sees our memory.  *done counts
 * whole sendall() calls; when one fails, how much of it left is unknown
 * (s->send_unknown): a wrapper does not say. */
static tf_status
wrapped_send(Stream *s, struct iovec *iov, int cnt, size_t *done)
{
    size_t left = 0;
    for (int i = 0; i < cnt; i++) {
        left += iov[i].iov_len;
    }
    int at = 0;
    size_t offset = 0;      /* into iov[at] */
    while (left > 0) {
        size_t size = left < SEND_CHUNK ? left : SEND_CHUNK;
        PyObject *chunk = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
        if (chunk == NULL) {
            return TF_ABORTED;
        }
        char *out = PyBytes_AS_STRING(chunk);
        for (size_t filled = 0; filled < size;) {
            size_t step = iov[at].iov_len - offset;
            step = step < size - filled ? step : size - filled;
            memcpy(out + filled, (char *)iov[at].iov_base + offset, step);
            filled += step;
            offset += step;
            if (offset == iov[at].iov_len) {
                at++;
                offset = 0;
            }
        }
        tf_status armed = wrapped_check_deadline(s);
        if (armed != TF_OK) {
            Py_DECREF(chunk);
            return armed;
        }
        PyObject *r = PyObject_CallMethod(s->sock, "sendall", "O", chunk);
        Py_DECREF(chunk);
        if (r == NULL) {
            s->send_unknown = 1;    /* part of the chunk may have left */
            return wrapped_failed(s);
        }
        Py_DECREF(r);
        *done += size;
        left -= size;
    }
    return TF_OK;
}

tf_status
stream_send(Stream *s, struct iovec *iov, int cnt, size_t *done)
{
    return s->wrapped ? wrapped_send(s, iov, cnt, done) : tf_send_iov(&s->io, iov, cnt, done);
}

/* ---------------------------------------------------- status -> exception */

static PyObject *
expected_obj(const Progress *p)
{
    return p->expected < 0 ? Py_NewRef(Py_None) : PyLong_FromSsize_t(p->expected);
}

static PyObject *
partial_bytes(const Progress *p)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)p->done);
    if (b == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(b);
    if (p->prefix_len > 0) {
        memcpy(out, p->prefix, p->prefix_len);
    }
    if (p->done > p->prefix_len) {
        memcpy(out + p->prefix_len, p->rest, p->done - p->prefix_len);
    }
    return b;
}

static const char *
sync_advice(const Progress *p)
{
    if (p->kept) {
        return "what arrived stays buffered in the Connection, and the next call "
               "continues from it";
    }
    return p->done == 0
        ? "nothing was consumed, the stream is where it was and the call may be retried"
        : "the stream is no longer on a frame boundary: close the connection";
}

/* " (3 whole frames)" after a count of bytes sent, when frames are counted. */
static const char *
frames_text(const Progress *p, char *out, size_t size)
{
    out[0] = '\0';
    if (p->counts_frames) {
        PyOS_snprintf(out, size, " (%zu whole frame%s)", p->frames, p->frames == 1 ? "" : "s");
    }
    return out;
}

/* A signal handler (or a wrapped socket's method) raised mid-transfer, or a
 * system call failed part way through frames that are counted: the
 * exception goes out unchanged, with a note (3.11+) of how far the transfer
 * got, so that even a Ctrl-C says what was cut. */
static void
note_progress(const Progress *p, const char *how, const char *verb, int unknown)
{
    if (p->done == 0 && !unknown && !p->counts_frames) {
        return;
    }
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *exc = take_exception();
    if (exc == NULL) {
        return;
    }
    char frames[64];
    PyObject *expected = expected_obj(p);
    PyObject *note = expected == NULL ? NULL : PyUnicode_FromFormat(
        "tcpframe: %s after %s %zu of %S bytes of the %s%s; %s", how, verb, p->done,
        expected, p->what, frames_text(p, frames, sizeof frames),
        p->advice ? p->advice
        : p->kept ? "they stay buffered in the Connection, and the next read continues from them"
        : unknown ? "and perhaps more (a wrapped socket's sendall() does not say); the "
                    "stream may no longer be on a frame boundary"
        : "the stream is no longer on a frame boundary");
    Py_XDECREF(expected);
    PyObject *r = note ? PyObject_CallMethod(exc, "add_note", "N", note) : NULL;
    if (r == NULL) {
        PyErr_Clear();      /* the original exception matters more */
    }
    Py_XDECREF(r);
    put_exception(exc);
#else
    (void)how;      /* no add_note before 3.11 */
    (void)verb;
#endif
}

/* .sent (None when unknown) and .frames_sent on the pending exception,
 * whatever it is.  If it refuses attributes, it still goes out as it is. */
static void
attach_progress(const Progress *p, int unknown)
{
    PyObject *exc = take_exception();
    if (exc == NULL) {
        return;
    }
    PyObject *sent = unknown ? Py_NewRef(Py_None) : PyLong_FromSize_t(p->done);
    PyObject *frames = PyLong_FromSize_t(p->frames);
    if (sent == NULL || frames == NULL || PyObject_SetAttrString(exc, "sent", sent) < 0 ||
        PyObject_SetAttrString(exc, "frames_sent", frames) < 0) {
        PyErr_Clear();
    }
    Py_XDECREF(sent);
    Py_XDECREF(frames);
    put_exception(exc);
}

static const char *
timeout_reason(Stream *s, int sending)
{
    if (s->timeout != 0.0) {
        return "timed out";
    }
    return sending ? "the socket is non-blocking (timeout 0.0) and its send buffer was full"
                   : "the socket is non-blocking (timeout 0.0) and the data was not there";
}

void
raise_recv_failure(Stream *s, tf_status status, const Progress *p)
{
    if (status == TF_ABORTED) {
        note_progress(p, "interrupted", "receiving", 0);
        return;
    }
    if (status == TF_ERRNO) {
        errno = s->io.error;
        PyErr_SetFromErrno(PyExc_OSError);
        return;
    }
    PyObject *partial = partial_bytes(p);
    PyObject *expected = expected_obj(p);
    PyObject *msg = NULL;
    if (partial == NULL || expected == NULL) {
        goto done;
    }
    if (status == TF_EOF && p->done == 0 && p->expected < 0) {
        raise_new(s->st->ConnectionClosed, "(sOO)",
                  "the peer closed the connection between frames (no frame was in "
                  "progress): the conversation is over", partial, Py_None);
    }
    else if (status == TF_EOF) {
        msg = PyUnicode_FromFormat(
            "the peer closed the connection after %zu of %S bytes of the %s; "
            "what came is in .partial", p->done, expected, p->what);
        if (msg != NULL) {
            raise_new(s->st->ConnectionClosed, "(OOO)", msg, partial, expected);
        }
    }
    else {
        msg = p->expected < 0 && p->done == 0
            ? PyUnicode_FromFormat("%s before any byte of the next frame arrived; %s",
                                   timeout_reason(s, 0), sync_advice(p))
            : PyUnicode_FromFormat("%s after %zu of %S bytes of the %s; %s",
                                   timeout_reason(s, 0), p->done, expected, p->what,
                                   sync_advice(p));
        if (msg != NULL) {
            raise_new(s->st->TransferTimeout, "(OOOO)", msg, partial, Py_None, expected);
        }
    }
done:
    Py_XDECREF(msg);
    Py_XDECREF(partial);
    Py_XDECREF(expected);
}

static void
raise_send_timeout(Stream *s, const Progress *p)
{
    PyObject *expected = expected_obj(p);
    if (expected == NULL) {
        return;
    }
    char frames[64];
    frames_text(p, frames, sizeof frames);
    if (s->send_unknown) {
        /* .sent is None: what a failed sendall() moved is not known. */
        PyObject *msg = PyUnicode_FromFormat(
            "%s inside %.100s.sendall() with %zu of %S bytes of the %s sent before it%s; how "
            "much of that call's data left is unknown, so the stream may no longer be "
            "on a frame boundary: %s", timeout_reason(s, 1), Py_TYPE(s->sock)->tp_name,
            p->done, expected, p->what, frames, p->advice ? p->advice : "close the connection");
        if (msg != NULL) {
            raise_new(s->st->TransferTimeout, "(NOOO)", msg, Py_None, Py_None, expected);
        }
    }
    else {
        PyObject *msg = PyUnicode_FromFormat("%s after sending %zu of %S bytes of the %s%s; %s",
                                             timeout_reason(s, 1), p->done, expected, p->what,
                                             frames, p->advice ? p->advice : sync_advice(p));
        if (msg != NULL) {
            raise_new(s->st->TransferTimeout, "(NOnO)", msg, Py_None, (Py_ssize_t)p->done,
                      expected);
        }
    }
    Py_DECREF(expected);
}

void
raise_send_failure(Stream *s, tf_status status, const Progress *p)
{
    if (status == TF_ABORTED) {
        note_progress(p, "interrupted", "sending", s->send_unknown);
    }
    else if (status == TF_ERRNO) {
        errno = s->io.error;
        PyErr_SetFromErrno(PyExc_OSError);
        if (p->counts_frames) {
            note_progress(p, "failed", "sending", 0);
        }
    }
    else {
        raise_send_timeout(s, p);   /* TF_EOF cannot come from a send */
    }
    if (p->counts_frames) {
        attach_progress(p, s->send_unknown);
    }
}

/* ------------------------------------------------------------- receiving */

tf_status
recv_growing_into(Stream *s, Py_ssize_t n, PyObject **result, size_t *got)
{
    Py_ssize_t cap = PyBytes_GET_SIZE(*result);
    for (;;) {
        tf_status status = stream_recv_exact(s, PyBytes_AS_STRING(*result), (size_t)cap, got);
        if (status != TF_OK || cap == n) {
            if (status != TF_OK && _PyBytes_Resize(result, (Py_ssize_t)*got) < 0) {
                return TF_ABORTED;
            }
            return status;
        }
        cap = cap > n / 2 ? n : cap * 2;
        if (_PyBytes_Resize(result, cap) < 0) {
            return TF_ABORTED;
        }
    }
}

/* Exactly n bytes as a new bytes object that grows as they arrive; on
 * failure raise with the progress `p` (its prefix, what, expected). */
static PyObject *
recv_exact_bytes(Stream *s, Py_ssize_t n, Progress p)
{
    PyObject *result = PyBytes_FromStringAndSize(NULL, n < GROW_START ? n : GROW_START);
    if (result == NULL) {
        return NULL;
    }
    size_t got = 0;
    tf_status status = recv_growing_into(s, n, &result, &got);
    if (status == TF_OK) {
        return result;
    }
    if (result != NULL) {
        p.done = p.prefix_len + got;
        p.rest = PyBytes_AS_STRING(result);
        raise_recv_failure(s, status, &p);
        Py_DECREF(result);
    }
    return NULL;
}

PyObject *
receive_all_from(module_state *st, PyObject *sock, Py_ssize_t n)
{
    Stream s;
    if (stream_open(&s, st, sock, FOR_RECV) < 0) {
        return NULL;
    }
    PyObject *result = recv_exact_bytes(&s, n, (Progress){.what = "data", .expected = n});
    stream_close(&s);
    return result;
}

int
receive_into_from(module_state *st, PyObject *sock, Py_buffer *view)
{
    Stream s;
    if (stream_open(&s, st, sock, FOR_RECV) < 0) {
        return -1;
    }
    size_t done = 0;
    tf_status status = stream_recv_exact(&s, view->buf, (size_t)view->len, &done);
    if (status != TF_OK) {
        raise_recv_failure(&s, status, &(Progress){.what = "buffer", .done = done,
                                                   .expected = view->len, .rest = view->buf});
    }
    stream_close(&s);
    return status != TF_OK ? -1 : 0;
}

/* The announced length of the next frame, or -1 with an exception set.
 * header receives the raw header bytes. */
static Py_ssize_t
recv_header(Stream *s, Py_ssize_t max_size, unsigned char header[TF_HEADER_SIZE])
{
    size_t got = 0;
    tf_status status = stream_recv_exact(s, (char *)header, TF_HEADER_SIZE, &got);
    if (status != TF_OK) {
        /* The size is unknown until the header is whole: None when nothing
         * came (a clean close), else at least the header's 8 bytes. */
        raise_recv_failure(s, status, &(Progress){.what = "frame header", .done = got,
                                                  .expected = got == 0 ? -1 : TF_HEADER_SIZE,
                                                  .rest = (const char *)header});
        return -1;
    }
    size_t n;
    if (tf_decode_header(header, &n) < 0) {
        raise_bad_header(s->st, header);
        return -1;
    }
    if ((Py_ssize_t)n > max_size) {
        raise_too_large_to_receive(s->st, header, n, max_size);
        return -1;
    }
    return (Py_ssize_t)n;
}

PyObject *
read_frame(module_state *st, PyObject *sock, Py_ssize_t max_size)
{
    Stream s;
    if (stream_open(&s, st, sock, FOR_RECV) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    unsigned char header[TF_HEADER_SIZE];
    Py_ssize_t n = recv_header(&s, max_size, header);
    if (n >= 0) {
        result = recv_exact_bytes(&s, n, (Progress){.what = "frame", .expected = TF_HEADER_SIZE + n,
                                                    .prefix = (const char *)header,
                                                    .prefix_len = TF_HEADER_SIZE});
    }
    stream_close(&s);
    return result;
}

/* --------------------------------------------------------------- sending */

int
send_frame_on(Stream *s, const char *data, Py_ssize_t len)
{
    unsigned char header[TF_HEADER_SIZE];
    if (len < 0 || tf_encode_header((size_t)len, header) < 0) {
        raise_too_large_to_send(s->st, len);
        return -1;
    }
    struct iovec iov[2] = {{header, TF_HEADER_SIZE}, {(void *)data, (size_t)len}};
    size_t done = 0;
    tf_status status = stream_send(s, iov, 2, &done);
    if (status != TF_OK) {
        raise_send_failure(s, status, &(Progress){.what = "frame", .done = done,
                                                  .expected = TF_HEADER_SIZE + len});
        return -1;
    }
    return 0;
}

int
send_all_on(Stream *s, const char *data, Py_ssize_t len)
{
    struct iovec iov = {(void *)data, (size_t)len};
    size_t done = 0;
    tf_status status = stream_send(s, &iov, 1, &done);
    if (status != TF_OK) {
        raise_send_failure(s, status, &(Progress){.what = "data", .done = done, .expected = len});
        return -1;
    }
    return 0;
}

/* Open, run one send, close: for the module's functions on a socket. */
static PyObject *
send_once(module_state *st, PyObject *sock, const char *data, Py_ssize_t len,
          int (*send)(Stream *, const char *, Py_ssize_t))
{
    Stream s;
    if (stream_open(&s, st, sock, FOR_SEND) < 0) {
        return NULL;
    }
    int r = send(&s, data, len);
    stream_close(&s);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
send_frame(module_state *st, PyObject *sock, const char *data, Py_ssize_t len)
{
    /* Checked before the socket is: a caller's mistake says what it is. */
    if ((size_t)len > TF_MAX_SIZE) {
        raise_too_large_to_send(st, len);
        return NULL;
    }
    return send_once(st, sock, data, len, send_frame_on);
}

PyObject *
send_all_to(module_state *st, PyObject *sock, const char *data, Py_ssize_t len)
{
    return send_once(st, sock, data, len, send_all_on);
}

/* ------------------------------------------------------------- arguments */

int
size_arg(PyObject *obj, const char *name, Py_ssize_t deflt, Py_ssize_t *out)
{
    if (obj == NULL) {
        *out = deflt;
        return 0;
    }
    /* Past PY_SSIZE_T_MAX is "more than could ever come": clamp, no error. */
    Py_ssize_t v = PyNumber_AsSsize_t(obj, NULL);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0, got %zd", name, v);
        return -1;
    }
    *out = v;
    return 0;
}

int
max_size_arg(PyObject *obj, Py_ssize_t deflt, Py_ssize_t *out)
{
    if (size_arg(obj == Py_None ? NULL : obj, "max_size", deflt, out) < 0) {
        return -1;
    }
    if (*out > (Py_ssize_t)TF_MAX_SIZE) {
        *out = (Py_ssize_t)TF_MAX_SIZE;     /* no header announces more */
    }
    return 0;
}
