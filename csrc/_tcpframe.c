/* tcpframe._tcpframe: the thin binding between Python objects and the plain-C
 * core (frame_header.c, frame_io.c).  It turns arguments into buffers and file
 * descriptors, supplies the GIL/signal hooks, and turns core statuses into the
 * exceptions of tcpframe.errors, each carrying what was transferred.
 *
 * Not built on the Limited API: a frame's bytes object grows as its payload
 * arrives (so a peer announcing 99,999,999 bytes and sending ten costs ten)
 * with _PyBytes_Resize, whose realloc moves no data for large blocks.  The
 * stable ABI has no way to grow a bytes object; every alternative copies. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>

#include "frame_header.h"
#include "frame_io.h"

/* A bytes object for a frame starts at most this big and doubles as data
 * arrives: memory follows the bytes received, not the length announced. */
#define GROW_START ((Py_ssize_t)1 << 20)
/* Wrapped sockets (TLS) get header and payload joined into one sendall()
 * below this size, so two small writes never meet Nagle's algorithm. */
#define JOIN_LIMIT ((Py_ssize_t)1 << 14)

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *Py_NewRef(PyObject *o) { Py_INCREF(o); return o; }
#endif

/* The pending exception as one object: 3.12's API, emulated before it. */
static PyObject *
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

static void
put_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

typedef struct {
    PyObject *socket_type;      /* socket.socket: the one type whose fd we drive */
    PyObject *socket_timeout;   /* socket.timeout, raised by wrapped sockets */
    PyObject *ConnectionClosed;
    PyObject *FrameError;
    PyObject *FrameTooLarge;
    PyObject *TransferTimeout;
} module_state;

static inline module_state *
get_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* ---------------------------------------------------------------- errors */

/* Raise cls(*args) built from a format, so the instance carries its fields. */
static void
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

static void
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

static void
raise_too_large_to_send(module_state *st, Py_ssize_t size)
{
    raise_new(st->FrameTooLarge, "(snn)",
              "payload too large for a frame: the 8-digit header can announce at "
              "most 99,999,999 bytes; nothing was sent, split the data into "
              "several frames", size, (Py_ssize_t)TF_MAX_SIZE);
}

/* --------------------------------------------------------------- streams */

/* One call's view of a socket: either its file descriptor driven by the C
 * core, or -- for anything that is not exactly socket.socket (SSLSocket, a
 * wrapper) -- its own recv_into()/sendall() methods, so TLS is never bypassed. */
typedef struct {
    tf_hooks hooks;          /* first: the core hands it back to our hooks */
    PyThreadState *tstate;
    module_state *st;
    PyObject *sock;
    int wrapped;
    double timeout;          /* sock.gettimeout(); negative for None */
    int timeout_changed;     /* a wrapped socket's timeout was narrowed */
    tf_io io;
} Stream;

static void
gil_release(tf_hooks *hooks)
{
    ((Stream *)hooks)->tstate = PyEval_SaveThread();
}

static void
gil_acquire(tf_hooks *hooks)
{
    PyEval_RestoreThread(((Stream *)hooks)->tstate);
}

/* EINTR: run the Python signal handlers now.  One that raises (Ctrl-C) stops
 * the transfer; one that returns lets it go on with the time that is left. */
static int
run_signal_handlers(tf_hooks *hooks)
{
    (void)hooks;
    return PyErr_CheckSignals() < 0;
}

static int
stream_open(Stream *s, module_state *st, PyObject *sock)
{
    s->hooks.release = gil_release;
    s->hooks.acquire = gil_acquire;
    s->hooks.interrupted = run_signal_handlers;
    s->tstate = NULL;
    s->st = st;
    s->sock = sock;
    s->wrapped = !Py_IS_TYPE(sock, (PyTypeObject *)st->socket_type);
    s->timeout = -1.0;
    s->timeout_changed = 0;
    s->io.fd = -1;
    s->io.hooks = &s->hooks;
    s->io.error = 0;
    s->io.deadline_ns = TF_NO_DEADLINE;

    PyObject *t = PyObject_CallMethod(sock, "gettimeout", NULL);
    if (t == NULL) {
        if (!s->wrapped || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();      /* a minimal wrapper: no timeout, it blocks */
    }
    else if (t != Py_None) {
        s->timeout = PyFloat_AsDouble(t);
        if (s->timeout == -1.0 && PyErr_Occurred()) {
            Py_DECREF(t);
            return -1;
        }
        /* Past ~30 years a deadline is no deadline (and would overflow). */
        if (s->timeout < 1e9) {
            s->io.deadline_ns = tf_monotonic_ns() + (int64_t)(s->timeout * 1e9);
        }
    }
    Py_XDECREF(t);

    if (!s->wrapped) {
        PyObject *fd = PyObject_CallMethod(sock, "fileno", NULL);
        if (fd == NULL) {
            return -1;
        }
        long v = PyLong_AsLong(fd);
        Py_DECREF(fd);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (v < 0) {
            errno = EBADF;
            PyErr_SetString(PyExc_OSError,
                            "the socket is closed (fileno() is -1); open a new connection");
            return -1;
        }
        s->io.fd = (int)v;
    }
    return 0;
}

/* Put back a wrapped socket's own timeout, keeping any pending exception. */
static int
stream_close(Stream *s)
{
    if (!s->timeout_changed) {
        return 0;
    }
    PyObject *pending = take_exception();
    PyObject *r = PyObject_CallMethod(s->sock, "settimeout", "d", s->timeout);
    Py_XDECREF(r);
    if (pending == NULL) {
        return r == NULL ? -1 : 0;
    }
    if (r == NULL) {
        PyErr_Clear();      /* the first error is the one worth reporting */
    }
    put_exception(pending);
    return -1;
}

/* Before each method call on a wrapped socket with a timeout, narrow its
 * timeout to what is left of our deadline: one deadline for the whole call. */
static tf_status
wrapped_arm_deadline(Stream *s)
{
    if (s->timeout <= 0.0) {
        return TF_OK;       /* None blocks; 0.0 is non-blocking already */
    }
    int64_t left = s->io.deadline_ns - tf_monotonic_ns();
    if (left <= 0) {
        return TF_TIMEOUT;
    }
    PyObject *r = PyObject_CallMethod(s->sock, "settimeout", "d", (double)left / 1e9);
    if (r == NULL) {
        return TF_ABORTED;
    }
    Py_DECREF(r);
    s->timeout_changed = 1;
    return TF_OK;
}

/* A Python exception from a wrapped socket: its timeout is ours to report
 * (with progress); anything else propagates as it is. */
static tf_status
wrapped_failed(Stream *s)
{
    if (PyErr_ExceptionMatches(s->st->socket_timeout)) {
        PyErr_Clear();
        return TF_TIMEOUT;
    }
    return TF_ABORTED;
}

/* Call sock.<method>(memoryview over buf[0:len]) and release the view at
 * once, so the callee cannot keep a pointer into memory we are about to move. */
static PyObject *
call_with_view(PyObject *sock, const char *method, char *buf, Py_ssize_t len, int flags)
{
    PyObject *view = PyMemoryView_FromMemory(buf, len, flags);
    if (view == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallMethod(sock, method, "O", view);
    PyObject *pending = r == NULL ? take_exception() : NULL;
    PyObject *released = PyObject_CallMethod(view, "release", NULL);
    Py_DECREF(view);
    if (pending != NULL) {
        Py_XDECREF(released);
        PyErr_Clear();      /* the method's own error is the one to report */
        put_exception(pending);
        return NULL;
    }
    if (released == NULL) {     /* the method kept an export of our memory */
        Py_XDECREF(r);
        return NULL;
    }
    Py_DECREF(released);
    return r;
}

static tf_status
stream_recv_exact(Stream *s, char *buf, size_t n, size_t *done)
{
    if (!s->wrapped) {
        return tf_recv_exact(&s->io, buf, n, done);
    }
    while (*done < n) {
        tf_status armed = wrapped_arm_deadline(s);
        if (armed != TF_OK) {
            return armed;
        }
        Py_ssize_t want = (Py_ssize_t)(n - *done);
        PyObject *r = call_with_view(s->sock, "recv_into", buf + *done, want, PyBUF_WRITE);
        if (r == NULL) {
            return wrapped_failed(s);
        }
        Py_ssize_t got = PyLong_AsSsize_t(r);
        Py_DECREF(r);
        if (got == -1 && PyErr_Occurred()) {
            return TF_ABORTED;
        }
        if (got < 0 || got > want) {
            PyErr_Format(PyExc_ValueError,
                         "%.200s.recv_into() returned %zd for a buffer of %zd bytes",
                         Py_TYPE(s->sock)->tp_name, got, want);
            return TF_ABORTED;
        }
        if (got == 0) {
            return TF_EOF;
        }
        *done += (size_t)got;
    }
    return TF_OK;
}

static tf_status
wrapped_sendall(Stream *s, char *buf, size_t len, size_t *done)
{
    if (len == 0) {
        return TF_OK;
    }
    tf_status armed = wrapped_arm_deadline(s);
    if (armed != TF_OK) {
        return armed;
    }
    PyObject *r = call_with_view(s->sock, "sendall", buf, (Py_ssize_t)len, PyBUF_READ);
    if (r == NULL) {
        return wrapped_failed(s);
    }
    Py_DECREF(r);
    *done += len;
    return TF_OK;
}

/* Send iov[0..cnt).  For a wrapped socket *done can only count whole
 * sendall() calls: a wrapper does not say how much of a failed one left. */
static tf_status
stream_send(Stream *s, struct iovec *iov, int cnt, size_t *done)
{
    if (!s->wrapped) {
        return tf_send_iov(&s->io, iov, cnt, done);
    }
    size_t total = 0;
    for (int i = 0; i < cnt; i++) {
        total += iov[i].iov_len;
    }
    if (cnt > 1 && total <= (size_t)JOIN_LIMIT) {
        char joined[JOIN_LIMIT];
        size_t at = 0;
        for (int i = 0; i < cnt; i++) {
            memcpy(joined + at, iov[i].iov_base, iov[i].iov_len);
            at += iov[i].iov_len;
        }
        return wrapped_sendall(s, joined, total, done);
    }
    for (int i = 0; i < cnt; i++) {
        tf_status st = wrapped_sendall(s, iov[i].iov_base, iov[i].iov_len, done);
        if (st != TF_OK) {
            return st;
        }
    }
    return TF_OK;
}

/* ---------------------------------------------------- status -> exception */

/* What a failed call was moving, for its exception's message and fields. */
typedef struct {
    const char *what;         /* "frame", "data", ... */
    const char *prefix;       /* raw bytes already consumed before `partial` */
    size_t prefix_len;        /* (a frame's header, when the payload failed) */
    size_t done;              /* bytes of the item moved, prefix included */
    PyObject *expected;       /* item size, or None: borrowed */
} Progress;

static PyObject *
progress_bytes(const Progress *p, const char *rest)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)p->done);
    if (b == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(b);
    memcpy(out, p->prefix, p->prefix_len);
    memcpy(out + p->prefix_len, rest, p->done - p->prefix_len);
    return b;
}

static const char *
sync_advice(const Progress *p)
{
    return p->done == 0
        ? "nothing was consumed, the stream is where it was and the call may be retried"
        : "the stream is no longer on a frame boundary: close the connection";
}

/* A signal handler (or a wrapped socket's method) raised mid-transfer: its
 * exception goes out unchanged, with a note (3.11+) of how far the transfer
 * got, so that even a Ctrl-C says what was cut. */
static void
note_progress(const Progress *p, const char *verb)
{
    if (p->done == 0) {
        return;
    }
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *exc = take_exception();
    if (exc == NULL) {
        return;
    }
    PyObject *note = PyUnicode_FromFormat(
        "tcpframe: interrupted after %s %zu of %S bytes of the %s; the stream is "
        "no longer on a frame boundary", verb, p->done, p->expected, p->what);
    PyObject *r = note ? PyObject_CallMethod(exc, "add_note", "N", note) : NULL;
    if (r == NULL) {
        PyErr_Clear();      /* the original exception matters more */
    }
    Py_XDECREF(r);
    put_exception(exc);
#else
    (void)verb;     /* no add_note before 3.11 */
#endif
}

/* Turn a failed receive into its exception; `rest` holds the bytes received
 * after the prefix.  TF_ABORTED means a Python exception is already set. */
static void
raise_recv_failure(Stream *s, tf_status status, const Progress *p, const char *rest)
{
    if (status == TF_ABORTED) {
        note_progress(p, "receiving");
        return;
    }
    if (status == TF_ERRNO) {
        errno = s->io.error;
        PyErr_SetFromErrno(PyExc_OSError);
        return;
    }
    PyObject *partial = progress_bytes(p, rest);
    if (partial == NULL) {
        return;
    }
    if (status == TF_EOF && p->done == 0 && p->expected == Py_None) {
        raise_new(s->st->ConnectionClosed, "(sOO)",
                  "the peer closed the connection between frames (no frame was in "
                  "progress): the conversation is over", partial, Py_None);
    }
    else if (status == TF_EOF) {
        PyObject *msg = PyUnicode_FromFormat(
            "the peer closed the connection after %zu of %S bytes of the %s; "
            "what came is in .partial", p->done, p->expected, p->what);
        if (msg != NULL) {
            raise_new(s->st->ConnectionClosed, "(NOO)", msg, partial, p->expected);
        }
    }
    else {
        const char *why = s->timeout == 0.0
            ? "the socket is non-blocking (timeout 0.0) and the data was not there"
            : "timed out";
        PyObject *msg = PyUnicode_FromFormat(
            "%s after %zu of %S bytes of the %s; %s", why, p->done, p->expected,
            p->what, sync_advice(p));
        if (msg != NULL) {
            raise_new(s->st->TransferTimeout, "(NOOO)", msg, partial, Py_None, p->expected);
        }
    }
    Py_DECREF(partial);
}

static void
raise_send_failure(Stream *s, tf_status status, const Progress *p)
{
    if (status == TF_ABORTED) {
        note_progress(p, "sending");
        return;
    }
    if (status == TF_ERRNO) {
        errno = s->io.error;
        PyErr_SetFromErrno(PyExc_OSError);
        return;
    }
    /* TF_EOF cannot come from a send: only a timeout is left. */
    const char *why = s->timeout == 0.0
        ? "the socket is non-blocking (timeout 0.0) and its send buffer was full"
        : "timed out";
    PyObject *msg = PyUnicode_FromFormat(
        "%s after sending %zu of %S bytes of the %s; %s", why, p->done, p->expected,
        p->what, sync_advice(p));
    if (msg != NULL) {
        raise_new(s->st->TransferTimeout, "(NOnO)", msg, Py_None, (Py_ssize_t)p->done,
                  p->expected);
    }
}

/* ------------------------------------------------------------- receiving */

/* Receive n bytes into a new bytes object that grows (doubling from
 * GROW_START) as they arrive.  On failure raise with the progress in *p. */
static PyObject *
recv_growing(Stream *s, Py_ssize_t n, Progress *p)
{
    Py_ssize_t cap = n < GROW_START ? n : GROW_START;
    PyObject *result = PyBytes_FromStringAndSize(NULL, cap);
    if (result == NULL) {
        return NULL;
    }
    size_t got = 0;
    for (;;) {
        tf_status status = stream_recv_exact(s, PyBytes_AS_STRING(result), (size_t)cap, &got);
        p->done = p->prefix_len + got;
        if (status != TF_OK) {
            raise_recv_failure(s, status, p, PyBytes_AS_STRING(result));
            Py_DECREF(result);
            return NULL;
        }
        if (cap == n) {
            return result;
        }
        cap = cap > n / 2 ? n : cap * 2;
        if (_PyBytes_Resize(&result, cap) < 0) {
            return NULL;
        }
    }
}

/* The announced length of the next frame, or -1 with an exception set.
 * header receives the raw header bytes. */
static Py_ssize_t
recv_header(Stream *s, Py_ssize_t max_size, unsigned char header[TF_HEADER_SIZE])
{
    size_t got = 0;
    tf_status status = stream_recv_exact(s, (char *)header, TF_HEADER_SIZE, &got);
    if (status != TF_OK) {
        /* Expected is unknown until the header is whole: None when nothing
         * came (a clean close), else at least the header's 8 bytes. */
        PyObject *expected = got == 0 ? Py_NewRef(Py_None) : PyLong_FromLong(TF_HEADER_SIZE);
        if (expected != NULL) {
            Progress p = {"frame header", "", 0, got, expected};
            raise_recv_failure(s, status, &p, (const char *)header);
            Py_DECREF(expected);
        }
        return -1;
    }
    size_t n;
    if (tf_decode_header(header, &n) < 0) {
        raise_bad_header(s->st, header);
        return -1;
    }
    if ((Py_ssize_t)n > max_size) {
        PyObject *raw = PyBytes_FromStringAndSize((const char *)header, TF_HEADER_SIZE);
        if (raw != NULL) {
            PyObject *msg = PyUnicode_FromFormat(
                "the peer announced a frame of %zu bytes, over max_size=%zd; no "
                "payload byte was read, the stream is out of sync: close the "
                "connection (or raise max_size if such frames are expected)",
                n, max_size);
            if (msg != NULL) {
                raise_new(s->st->FrameTooLarge, "(NnnN)", msg, (Py_ssize_t)n, max_size, raw);
            }
            else {
                Py_DECREF(raw);
            }
        }
        return -1;
    }
    return (Py_ssize_t)n;
}

/* The payload of the next frame as bytes. */
static PyObject *
read_frame(module_state *st, PyObject *sock, Py_ssize_t max_size)
{
    Stream s;
    if (stream_open(&s, st, sock) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    unsigned char header[TF_HEADER_SIZE];
    Py_ssize_t n = recv_header(&s, max_size, header);
    if (n >= 0) {
        PyObject *expected = PyLong_FromSsize_t(TF_HEADER_SIZE + n);
        if (expected != NULL) {
            Progress p = {"frame", (const char *)header, TF_HEADER_SIZE, 0, expected};
            result = recv_growing(&s, n, &p);
            Py_DECREF(expected);
        }
    }
    if (stream_close(&s) < 0) {
        Py_CLEAR(result);
    }
    return result;
}

/* --------------------------------------------------------------- sending */

/* Send header + payload in one vectored call. */
static PyObject *
send_frame(module_state *st, PyObject *sock, const char *data, Py_ssize_t len)
{
    if ((size_t)len > TF_MAX_SIZE) {
        raise_too_large_to_send(st, len);
        return NULL;
    }
    unsigned char header[TF_HEADER_SIZE];
    tf_encode_header((size_t)len, header);
    struct iovec iov[2] = {{header, TF_HEADER_SIZE}, {(void *)data, (size_t)len}};
    Stream s;
    if (stream_open(&s, st, sock) < 0) {
        return NULL;
    }
    size_t done = 0;
    tf_status status = stream_send(&s, iov, 2, &done);
    if (status != TF_OK) {
        PyObject *expected = PyLong_FromSsize_t(TF_HEADER_SIZE + len);
        if (expected != NULL) {
            Progress p = {"frame", "", 0, done, expected};
            raise_send_failure(&s, status, &p);
            Py_DECREF(expected);
        }
    }
    if (stream_close(&s) < 0 || status != TF_OK) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------- arguments */

/* METH_FASTCALL|METH_KEYWORDS parsing for our small signatures: `nreq`
 * required positional-only arguments, then optional ones named in `names`,
 * of which the first `npos_opt` may also come by position.  out[] has a
 * slot per parameter; optional slots keep their NULL (default) if absent. */
static int
parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
           Py_ssize_t nreq, Py_ssize_t npos_opt, const char *const *names, PyObject **out)
{
    if (nargs < nreq || nargs > nreq + npos_opt) {
        if (npos_opt == 0) {
            PyErr_Format(PyExc_TypeError, "%s() takes %zd positional argument%s (%zd given)",
                         fname, nreq, nreq == 1 ? "" : "s", nargs);
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "%s() takes from %zd to %zd positional arguments (%zd given)",
                         fname, nreq, nreq + npos_opt, nargs);
        }
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = args[i];
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t slot = -1;
        for (Py_ssize_t j = 0; names[j] != NULL; j++) {
            if (PyUnicode_CompareWithASCIIString(key, names[j]) == 0) {
                slot = nreq + j;
                break;
            }
        }
        if (slot < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R",
                         fname, key);
            return -1;
        }
        if (slot < nargs) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument %R",
                         fname, key);
            return -1;
        }
        out[slot] = args[nargs + k];
    }
    return 0;
}

static int
no_keywords(const char *fname, PyObject *kwnames)
{
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        PyErr_Format(PyExc_TypeError, "%s() takes no keyword arguments", fname);
        return -1;
    }
    return 0;
}

/* A size argument: an int >= 0 (a caller mistake is ValueError/TypeError,
 * never a FrameError, which is for what a peer sends). */
static int
size_arg(PyObject *obj, const char *name, Py_ssize_t deflt, Py_ssize_t *out)
{
    if (obj == NULL) {
        *out = deflt;
        return 0;
    }
    Py_ssize_t v = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
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

static const char *
encoding_arg(PyObject *obj)
{
    if (obj == NULL) {
        return "utf-8";
    }
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "encoding must be a str, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return PyUnicode_AsUTF8(obj);
}

/* --------------------------------------------------------- the functions */

PyDoc_STRVAR(send_all_doc,
"send_all($module, sock, data, /)\n--\n\n"
"Send every byte of data, a bytes-like object, without copying it.\n\n"
"The lesson's send_all_bytes(), done in C.  The socket's timeout is one\n"
"deadline for the whole call; on expiry TransferTimeout.sent says how many\n"
"bytes left.  Alias: send_all_bytes.");

static PyObject *
py_send_all(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    if (no_keywords("send_all", kwnames) < 0 ||
        parse_args("send_all", args, nargs, NULL, 2, 0, (const char *const[]){NULL}, a) < 0) {
        return NULL;
    }
    module_state *st = get_state(module);
    Py_buffer view;
    if (PyObject_GetBuffer(a[1], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Stream s;
    PyObject *result = NULL;
    if (stream_open(&s, st, a[0]) == 0) {
        struct iovec iov = {view.buf, (size_t)view.len};
        size_t done = 0;
        tf_status status = stream_send(&s, &iov, 1, &done);
        if (status != TF_OK) {
            PyObject *expected = PyLong_FromSsize_t(view.len);
            if (expected != NULL) {
                Progress p = {"data", "", 0, done, expected};
                raise_send_failure(&s, status, &p);
                Py_DECREF(expected);
            }
        }
        if (stream_close(&s) == 0 && status == TF_OK) {
            result = Py_NewRef(Py_None);
        }
    }
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(receive_all_doc,
"receive_all($module, sock, n, /)\n--\n\n"
"Receive exactly n bytes and return them as bytes.\n\n"
"The lesson's receive_all_bytes(), done in C.  Raises ConnectionClosed\n"
"(with .partial) if the peer closes first, TransferTimeout if the socket's\n"
"timeout passes first.  Aliases: receive_all_bytes, read_all_bytes.");

static PyObject *
py_receive_all(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    Py_ssize_t n;
    if (no_keywords("receive_all", kwnames) < 0 ||
        parse_args("receive_all", args, nargs, NULL, 2, 0, (const char *const[]){NULL}, a) < 0 ||
        size_arg(a[1], "n", 0, &n) < 0) {
        return NULL;
    }
    Stream s;
    if (stream_open(&s, get_state(module), a[0]) < 0) {
        return NULL;
    }
    PyObject *expected = PyLong_FromSsize_t(n);
    PyObject *result = NULL;
    if (expected != NULL) {
        Progress p = {"data", "", 0, 0, expected};
        result = recv_growing(&s, n, &p);
        Py_DECREF(expected);
    }
    if (stream_close(&s) < 0) {
        Py_CLEAR(result);
    }
    return result;
}

PyDoc_STRVAR(receive_into_doc,
"receive_into($module, sock, buffer, /)\n--\n\n"
"Fill the whole writable buffer from the socket; return its length in bytes.\n\n"
"Zero-copy: bytes go from the kernel straight into buffer (a bytearray,\n"
"memoryview, array, mmap...).  On ConnectionClosed or TransferTimeout the\n"
"bytes that did arrive are at the start of buffer and in .partial.");

static PyObject *
py_receive_into(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    if (no_keywords("receive_into", kwnames) < 0 ||
        parse_args("receive_into", args, nargs, NULL, 2, 0, (const char *const[]){NULL}, a) < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[1], &view, PyBUF_WRITABLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Format(PyExc_TypeError,
                         "receive_into() needs a writable buffer (bytearray, "
                         "memoryview of one, array...), not %.100s; to get new "
                         "bytes use receive_all()", Py_TYPE(a[1])->tp_name);
        }
        return NULL;
    }
    Stream s;
    PyObject *result = NULL;
    if (stream_open(&s, get_state(module), a[0]) == 0) {
        size_t done = 0;
        tf_status status = stream_recv_exact(&s, view.buf, (size_t)view.len, &done);
        if (status != TF_OK) {
            PyObject *expected = PyLong_FromSsize_t(view.len);
            if (expected != NULL) {
                Progress p = {"buffer", "", 0, done, expected};
                raise_recv_failure(&s, status, &p, view.buf);
                Py_DECREF(expected);
            }
        }
        if (stream_close(&s) == 0 && status == TF_OK) {
            result = PyLong_FromSsize_t(view.len);
        }
    }
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(send_bytes_doc,
"send_bytes($module, sock, data, /)\n--\n\n"
"Send data as one frame: 8 ASCII digits of length, then the bytes.\n\n"
"Header and payload leave in one system call (no Nagle stall) and the\n"
"payload is not copied.  A payload over MAX_SIZE raises FrameTooLarge\n"
"before any byte is sent.");

static PyObject *
py_send_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    if (no_keywords("send_bytes", kwnames) < 0 ||
        parse_args("send_bytes", args, nargs, NULL, 2, 0, (const char *const[]){NULL}, a) < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[1], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = send_frame(get_state(module), a[0], view.buf, view.len);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(read_bytes_doc,
"read_bytes($module, sock, /, *, max_size=99999999)\n--\n\n"
"Receive one frame and return its payload as bytes.\n\n"
"Raises FrameError for a header that is not 8 ASCII digits, FrameTooLarge\n"
"(before reading any payload) when the announced length exceeds max_size,\n"
"ConnectionClosed when the peer closes (.expected is None if it closed\n"
"cleanly between frames), TransferTimeout when the socket's timeout, one\n"
"deadline for the whole frame, passes.");

static const char *const read_kw[] = {"max_size", NULL};

static PyObject *
py_read_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2] = {NULL, NULL};
    Py_ssize_t max_size;
    if (parse_args("read_bytes", args, nargs, kwnames, 1, 0, read_kw, a) < 0 ||
        size_arg(a[1], "max_size", (Py_ssize_t)TF_MAX_SIZE, &max_size) < 0) {
        return NULL;
    }
    return read_frame(get_state(module), a[0], max_size);
}

PyDoc_STRVAR(send_string_doc,
"send_string($module, sock, text, /, encoding='utf-8')\n--\n\n"
"Send text, encoded, as one frame (the lesson's send_string).\n\n"
"The header counts encoded bytes, not characters, as the lesson's does.");

static const char *const send_string_kw[] = {"encoding", NULL};

static PyObject *
py_send_string(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3] = {NULL, NULL, NULL};
    if (parse_args("send_string", args, nargs, kwnames, 2, 1, send_string_kw, a) < 0) {
        return NULL;
    }
    if (!PyUnicode_Check(a[1])) {
        PyErr_Format(PyExc_TypeError,
                     "send_string() sends text: expected str, got %.100s (use "
                     "send_bytes() for bytes)", Py_TYPE(a[1])->tp_name);
        return NULL;
    }
    const char *encoding = encoding_arg(a[2]);
    if (encoding == NULL) {
        return NULL;
    }
    PyObject *encoded = PyUnicode_AsEncodedString(a[1], encoding, "strict");
    if (encoded == NULL) {
        return NULL;
    }
    PyObject *result = send_frame(get_state(module), a[0], PyBytes_AS_STRING(encoded),
                                  PyBytes_GET_SIZE(encoded));
    Py_DECREF(encoded);
    return result;
}

PyDoc_STRVAR(read_string_doc,
"read_string($module, sock, /, *, max_size=99999999, encoding='utf-8')\n--\n\n"
"Receive one frame and return its payload decoded as str.\n\n"
"Unlike the lesson's read_string, which returns bytes, this returns str.\n"
"Errors as read_bytes(); undecodable bytes raise UnicodeDecodeError (the\n"
"frame is consumed, the stream stays in sync).");

static const char *const read_string_kw[] = {"max_size", "encoding", NULL};

static PyObject *
py_read_string(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3] = {NULL, NULL, NULL};
    Py_ssize_t max_size;
    if (parse_args("read_string", args, nargs, kwnames, 1, 0, read_string_kw, a) < 0 ||
        size_arg(a[1], "max_size", (Py_ssize_t)TF_MAX_SIZE, &max_size) < 0) {
        return NULL;
    }
    const char *encoding = encoding_arg(a[2]);
    if (encoding == NULL) {
        return NULL;
    }
    PyObject *payload = read_frame(get_state(module), a[0], max_size);
    if (payload == NULL) {
        return NULL;
    }
    PyObject *text = PyUnicode_Decode(PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload),
                                      encoding, "strict");
    Py_DECREF(payload);
    return text;
}

PyDoc_STRVAR(encode_header_doc,
"encode_header($module, n, /)\n--\n\n"
"Return the 8-byte header announcing a payload of n bytes, e.g. b'00000005'.");

static PyObject *
py_encode_header(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[1];
    Py_ssize_t n;
    if (no_keywords("encode_header", kwnames) < 0 ||
        parse_args("encode_header", args, nargs, NULL, 1, 0, (const char *const[]){NULL}, a) < 0 ||
        size_arg(a[0], "n", 0, &n) < 0) {
        return NULL;
    }
    unsigned char header[TF_HEADER_SIZE];
    if (tf_encode_header((size_t)n, header) < 0) {
        raise_too_large_to_send(get_state(module), n);
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)header, TF_HEADER_SIZE);
}

PyDoc_STRVAR(decode_header_doc,
"decode_header($module, header, /)\n--\n\n"
"Return the payload length an 8-byte header announces.\n\n"
"Strict: exactly 8 ASCII digits.  Anything else -- a sign, '_', a space, a\n"
"non-ASCII digit, the wrong length -- raises FrameError (int() would accept\n"
"several of these).");

static PyObject *
py_decode_header(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[1];
    if (no_keywords("decode_header", kwnames) < 0 ||
        parse_args("decode_header", args, nargs, NULL, 1, 0, (const char *const[]){NULL}, a) < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    size_t n;
    if (view.len != TF_HEADER_SIZE) {
        PyObject *raw = PyBytes_FromStringAndSize(view.buf, view.len);
        if (raw != NULL) {
            PyObject *msg = PyUnicode_FromFormat(
                "a frame header is exactly 8 bytes, got %zd: %R", view.len, raw);
            if (msg != NULL) {
                raise_new(get_state(module)->FrameError, "(NO)", msg, raw);
            }
            Py_DECREF(raw);
        }
    }
    else if (tf_decode_header(view.buf, &n) < 0) {
        raise_bad_header(get_state(module), view.buf);
    }
    else {
        result = PyLong_FromSize_t(n);
    }
    PyBuffer_Release(&view);
    return result;
}

#define FASTCALL_KW(name) \
    {#name, (PyCFunction)(void (*)(void))py_##name, METH_FASTCALL | METH_KEYWORDS, name##_doc}

static PyMethodDef module_methods[] = {
    FASTCALL_KW(send_all),
    FASTCALL_KW(receive_all),
    FASTCALL_KW(receive_into),
    FASTCALL_KW(send_bytes),
    FASTCALL_KW(read_bytes),
    FASTCALL_KW(send_string),
    FASTCALL_KW(read_string),
    FASTCALL_KW(encode_header),
    FASTCALL_KW(decode_header),
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------ the module */

static int
import_attr(PyObject **slot, const char *module_name, const char *attr)
{
    PyObject *mod = PyImport_ImportModule(module_name);
    if (mod == NULL) {
        return -1;
    }
    *slot = PyObject_GetAttrString(mod, attr);
    Py_DECREF(mod);
    return *slot == NULL ? -1 : 0;
}

static int
module_exec(PyObject *module)
{
    module_state *st = get_state(module);
    if (import_attr(&st->socket_type, "socket", "socket") < 0 ||
        import_attr(&st->socket_timeout, "socket", "timeout") < 0 ||
        import_attr(&st->ConnectionClosed, "tcpframe.errors", "ConnectionClosed") < 0 ||
        import_attr(&st->FrameError, "tcpframe.errors", "FrameError") < 0 ||
        import_attr(&st->FrameTooLarge, "tcpframe.errors", "FrameTooLarge") < 0 ||
        import_attr(&st->TransferTimeout, "tcpframe.errors", "TransferTimeout") < 0) {
        return -1;
    }
    if (!PyType_Check(st->socket_type)) {
        PyErr_SetString(PyExc_TypeError, "socket.socket is not a type");
        return -1;
    }
    if (PyModule_AddIntConstant(module, "HEADER_SIZE", TF_HEADER_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "MAX_SIZE", (long)TF_MAX_SIZE) < 0) {
        return -1;
    }
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *st = get_state(module);
    Py_VISIT(st->socket_type);
    Py_VISIT(st->socket_timeout);
    Py_VISIT(st->ConnectionClosed);
    Py_VISIT(st->FrameError);
    Py_VISIT(st->FrameTooLarge);
    Py_VISIT(st->TransferTimeout);
    return 0;
}

static int
module_clear(PyObject *module)
{
    module_state *st = get_state(module);
    Py_CLEAR(st->socket_type);
    Py_CLEAR(st->socket_timeout);
    Py_CLEAR(st->ConnectionClosed);
    Py_CLEAR(st->FrameError);
    Py_CLEAR(st->FrameTooLarge);
    Py_CLEAR(st->TransferTimeout);
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tcpframe._tcpframe",
    .m_doc = "C core of tcpframe: TCP message framing (8 ASCII digits, then payload).",
    .m_size = sizeof(module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__tcpframe(void)
{
    return PyModuleDef_Init(&module_def);
}
